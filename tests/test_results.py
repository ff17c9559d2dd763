"""docs/results.md is rendered from docs/results/*.json and nothing else: the committed page
is what the records render to, byte for byte, and a run's metrics.json becomes a record."""

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import REPO

SCRIPT = REPO / "scripts" / "render_results.py"


@pytest.fixture(scope="module")
def renderer():
    """scripts/render_results.py as a module (it is a script, not part of rnnlab)."""
    spec = importlib.util.spec_from_file_location("render_results", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_page_is_what_the_records_render_to(renderer, tmp_path: Path):
    out = tmp_path / "results.md"
    assert renderer.main(["--out", str(out)]) == 0
    assert out.read_bytes() == (REPO / "docs/results.md").read_bytes(), (
        "docs/results.md is stale: run python scripts/render_results.py"
    )
    assert renderer.main(["--out", str(out)]) == 0  # again: the same bytes
    assert out.read_bytes() == (REPO / "docs/results.md").read_bytes()


def test_check_fails_on_a_stale_page(renderer, tmp_path: Path, capsys):
    out = tmp_path / "results.md"
    renderer.main(["--out", str(out)])
    assert renderer.main(["--check", "--out", str(out)]) == 0
    out.write_text(out.read_text().replace("144.3", "140.0"))
    assert renderer.main(["--check", "--out", str(out)]) == 1
    assert "stale" in capsys.readouterr().err


def test_every_committed_record_says_where_it_came_from(renderer):
    records = renderer.load_records()
    assert len(records) >= 10
    for name, record in records.items():
        assert record["source"] in ("transcribed", "run", renderer.MIXED), name
        marked = {r.get("source") == "transcribed" for r in record.get("runs", [])}
        assert (record["source"] == renderer.MIXED) == (marked == {True, False}), name
        assert record["section"] in renderer.SECTIONS, name
        assert ("runs" in record) != ("rows" in record), name
        for path, caption in record.get("figures", []):
            assert (REPO / "docs" / path).is_file() and caption, (name, path)


TWO_SEEDS = {
    "title": "tiny preset",
    "section": "baselines",
    "source": "transcribed",
    "command": "rnnlab-train model.hidden_size=32",
    "machine": {"cpu": "Some CPU", "cores": 2, "torch_threads": 1, "gpu": None, "torch": "2.9"},
    "metric": ["test", "ppl"],
    "runs": [
        {"seed": 1, "val": {"ppl": 150.1}, "test": {"ppl": 144.3}, "wall_seconds": 2661},
        {"seed": 2, "val": {"ppl": 161.2}, "test": {"ppl": 148.5}, "val_curve": [268, 244.5]},
    ],
    "notes": "A note under the table.",
}


def test_a_preset_renders_with_its_seeds_and_their_spread(renderer, tmp_path: Path):
    page = renderer.render({"tiny": TWO_SEEDS})
    # the summary: mean one decimal finer than the seeds, min, max, two seeds, the source
    assert "| [tiny preset](#tiny-preset) | test ppl | 146.40 | 144.3 | 148.5 | 2 |" in page
    assert page.count("| transcribed |") == 1
    assert "Some CPU, 2 cores, 1 torch thread, torch 2.9" in page
    assert "| 1 | 150.1 | 144.3 | 44 min 21 s |  |" in page
    assert "| 2 | 161.2 | 148.5 |  | 268, 244.5 |" in page
    assert "test ppl over 2 seeds: mean 146.40, min 144.3, max 148.5." in page
    assert "```bash\nrnnlab-train model.hidden_size=32\n```" in page
    assert page.endswith("A note under the table.\n")
    assert renderer.spread([144.3, 148.5]) == pytest.approx((146.4, 144.3, 148.5))


def test_a_benchmark_table_keeps_its_printed_digits(renderer):
    record = {
        "title": "bench",
        "section": "speed",
        "source": "run",
        "columns": ["case", "ms", "ratio"],
        "rows": [["h128", 10.5, 1.0], ["h512", 4096, 0.63]],
        "formats": [None, None, ".3f"],
    }
    page = renderer.render({"bench": record})
    assert "| h128 | 10.5 | 1.000 |\n| h512 | 4,096 | 0.630 |" in page
    drawn = renderer.render({"bench": {**record, "figures": [["b.png", "ms by case"]]}})
    assert "| h512 | 4,096 | 0.630 |\n\n![ms by case](b.png)\n" in drawn
    with pytest.raises(SystemExit, match="section must be one of"):
        renderer.render({"bench": {**record, "section": "elsewhere"}})


def test_a_runs_metrics_json_becomes_a_record(renderer, trained_run: Path, tmp_path: Path):
    """--add copies a finished run into a preset's record; a second seed joins the first."""
    metrics = json.loads((trained_run / "metrics.json").read_text())
    records = tmp_path / "records"
    records.mkdir()
    (records / "tiny.json").write_text(json.dumps(TWO_SEEDS))  # transcribed: a run replaces it
    out = tmp_path / "results.md"
    args = ["--records", str(records), "--out", str(out), "--name", "tiny"]
    assert renderer.main(["--add", str(trained_run), *args]) == 0

    record = json.loads((records / "tiny.json").read_text())
    assert record["source"] == "run" and record["title"] == "tiny preset"
    assert record["metric"] == ["test", "ppl"]
    [run] = record["runs"]
    assert run["seed"] == metrics["hparams"]["seed"]
    assert run["test"]["ppl"] == round(metrics["test"]["ppl"], 2)  # the figures that matter
    assert run["test"]["loss"] == round(metrics["test"]["loss"], 4)
    assert run["tokens_per_sec"] == round(metrics["tokens_per_sec"])
    if metrics["peak_rss_mb"] is not None:  # and it shows in the table
        assert run["peak_rss_mb"] == round(metrics["peak_rss_mb"])
        assert f"| {renderer.fmt(run['peak_rss_mb'])} |" in out.read_text()
    assert run["machine"] == metrics["machine"]
    assert record["command"].startswith("rnnlab-train")

    other = tmp_path / "seed2"
    shutil.copytree(trained_run, other)
    metrics2 = {**metrics, "hparams": {**metrics["hparams"], "seed": 99999}}
    metrics2["test"] = {**metrics["test"], "ppl": metrics["test"]["ppl"] + 2.0}
    (other / "metrics.json").write_text(json.dumps(metrics2))
    assert renderer.main(["--add", str(other), *args]) == 0
    record = json.loads((records / "tiny.json").read_text())
    assert [r["seed"] for r in record["runs"]] == [metrics["hparams"]["seed"], 99999]
    mean, low, high = renderer.spread([r["test"]["ppl"] for r in record["runs"]])
    ppl = round(metrics["test"]["ppl"], 2)
    assert mean == pytest.approx(ppl + 1.0, abs=0.01)
    assert (low, high) == pytest.approx((ppl, ppl + 2.0), abs=0.01)
    page = out.read_text()
    assert "test ppl over 2 seeds: mean" in page and "| run |" in page
    assert f"machine: {metrics['machine']['cpu']}, {metrics['machine']['cores']} cores" in page
    assert renderer.main(["--check", "--records", str(records), "--out", str(out)]) == 0


def test_a_run_joins_the_seeds_transcribed_one_by_one(renderer, trained_run: Path, tmp_path):
    """A record of runs may hold seeds transcribed from an earlier session, each marked:
    --add keeps them beside the new run, and the page says which is which."""
    records = tmp_path / "records"
    records.mkdir()
    marked = [{**run, "source": "transcribed"} for run in TWO_SEEDS["runs"]]
    (records / "tiny.json").write_text(json.dumps({**TWO_SEEDS, "source": "run", "runs": marked}))
    out = tmp_path / "results.md"
    args = ["--records", str(records), "--out", str(out), "--name", "tiny"]
    assert renderer.main(["--add", str(trained_run), *args]) == 0
    record = json.loads((records / "tiny.json").read_text())
    assert record["source"] == renderer.MIXED and len(record["runs"]) == 3
    page = out.read_text()
    assert "| 1 (transcribed) |" in page and page.count(" (transcribed) |") == 2
    assert f"| {renderer.MIXED} |" in page


def test_a_table_rnnlab_compare_wrote_becomes_a_record(renderer, tmp_path: Path, capsys):
    """--add-csv keeps the columns asked for, in their order, numbers as numbers (tokens/s
    whole, losses to 4 decimals, blanks as None), and the record's own words stay."""
    report = tmp_path / "comparison_minutes.csv"
    report.write_text(
        "cell,runs,val at 5 min,val at 29 min,tokens/s\n"
        "gru,2,1.91234567,1.6012345,5123.456\n"
        "attention,1,,1.7,4857.0\n"
    )
    records = tmp_path / "records"
    records.mkdir()
    (records / "minutes.json").write_text(
        json.dumps(
            {
                "title": "Mixers by minute",
                "section": "runs",
                "figures": [["m.png", "by time"]],
                "notes": ["Why."],
            }
        )
    )
    args = ["--records", str(records), "--out", str(tmp_path / "results.md"), "--name", "minutes"]
    columns = ["--columns", "cell", "val at 29 min", "val at 5 min", "tokens/s"]
    assert renderer.main(["--add-csv", str(report), *args, *columns]) == 0
    record = json.loads((records / "minutes.json").read_text())
    assert record["columns"] == ["cell", "val at 29 min", "val at 5 min", "tokens/s"]
    assert record["rows"] == [["gru", 1.6012, 1.9123, 5123], ["attention", 1.7, None, 4857]]
    assert record["title"] == "Mixers by minute" and record["notes"] == ["Why."]
    assert record["figures"] == [["m.png", "by time"]]
    assert "| gru | 1.6012 | 1.9123 | 5,123 |" in (tmp_path / "results.md").read_text()
    with pytest.raises(SystemExit):
        renderer.main(["--add-csv", str(report), *args, "--columns", "cell", "no such"])
    assert "has no column 'no such'" in capsys.readouterr().err
