"""rnnlab-compare on a real 2 x 2 sweep (backend x hidden size) of experiment=compare_backends."""

import csv
import json
import math
import shutil
from pathlib import Path
from typing import Any

import matplotlib.image
import pytest
from hydra.core.utils import JobReturn, JobStatus
from hydra.types import RunMode
from omegaconf import OmegaConf

import rnnlab.report.sweep
from rnnlab.report.compare import compare
from rnnlab.report.mixers import (
    MINUTES,
    MIXER_PLOTS,
    crossings,
    crossings_markdown,
    known_at,
    leaders,
    minute_columns,
    minutes_table,
    table_minutes,
    val_curve,
)
from rnnlab.report.plots import CURVES, bar_heights
from rnnlab.report.runs import read_curves
from rnnlab.report.sweep import SweepReport
from tests.conftest import TINY_RUN, TINY_TEXT, invoke, one_sentence, run_cli

MIXER_NAMES = tuple(name for name, *_ in MIXER_PLOTS)
PLOTS = ("val_ppl_by_step", "val_ppl_by_time", "train_loss_by_step", "tokens_per_sec", *MIXER_NAMES)
REPORT = (
    "comparison.md",
    "comparison.csv",
    "comparison_groups.csv",
    "comparison_minutes.csv",
    *(f"{p}.png" for p in PLOTS),
)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """experiment=compare_backends cut to one seed and two tiny hidden sizes: 4 jobs."""
    root = tmp_path_factory.mktemp("compare")
    (root / "tiny.txt").write_text(TINY_TEXT, encoding="utf-8")
    small = [o for o in TINY_RUN if not o.startswith("model.hidden_size")]
    code = invoke(
        "train",
        "-m",
        "experiment=compare_backends",
        f"data.path={root / 'tiny.txt'}",
        *small,
        "trainer.limit_train_batches=10",
        "model.hidden_size=16,32",
        "seed=7",
        f"hydra.sweep.dir={root / 'sweep'}",
    )
    assert code == 0
    return root / "sweep"


def numbered(sweep: Path, num: int) -> Path:
    """Job ``num`` of a sweep: its directory is named ``<num>_<what it varies>``."""
    (found,) = sweep.glob(f"{num}_*")
    return found


def metrics_of(job: Path) -> dict:
    return json.loads((job / "metrics.json").read_text())


def read_csv(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(path.open()))


def job(sweep: Path, backend: str, hidden_size: int) -> Path:
    """The job directory of the fixture sweep that trained ``backend`` at ``hidden_size``."""
    (found,) = (
        p
        for p in sweep.iterdir()
        if (p / "metrics.json").is_file()
        and metrics_of(p)["hparams"]["backend"] == backend
        and metrics_of(p)["hparams"]["hidden_size"] == hidden_size
    )
    return found


def copy_sweep(sweep: Path, to: Path) -> Path:
    """The fixture sweep without its report, to change (the fixture is shared)."""
    shutil.copytree(sweep, to)
    for name in REPORT:
        (to / name).unlink()
    return to


def copy_run(
    run: Path, to: Path, config: dict[str, Any] | None = None, metrics: dict[str, Any] | None = None
) -> Path:
    """A copy of ``run`` as if it had been trained in ``to``, with dotted keys changed."""
    shutil.copytree(run, to)
    text = (to / "config.yaml").read_text()
    cfg = OmegaConf.create(text.replace(OmegaConf.create(text).paths.output_dir, str(to)))
    for key, value in (config or {}).items():
        OmegaConf.update(cfg, key, value)
    OmegaConf.save(cfg, to / "config.yaml")
    numbers = metrics_of(to)
    for key, value in (metrics or {}).items():
        *parents, last = key.split(".")
        node = numbers
        for parent in parents:
            node = node[parent]
        node[last] = value
    (to / "metrics.json").write_text(json.dumps(numbers))  # NaN and Infinity as Python writes them
    return to


def multirun_config(sweep_dir: Path, job_dir: Path) -> Any:
    """What a Hydra callback is given at the end of job ``job_dir`` of a multirun."""
    hydra = {
        "mode": RunMode.MULTIRUN,
        "runtime": {"output_dir": str(job_dir)},
        "sweep": {"dir": str(sweep_dir)},
    }
    return OmegaConf.create({"hydra": hydra})


def test_the_sweep_writes_its_report_when_it_ends(sweep: Path):
    for name in ("comparison.md", "comparison.csv", "comparison_groups.csv", "summary.csv"):
        assert (sweep / name).is_file(), name
    rows = read_csv(sweep / "comparison.csv")
    assert sorted((r["backend"], r["hidden_size"]) for r in rows) == [
        ("builtin", "16"),
        ("builtin", "32"),
        ("custom", "16"),
        ("custom", "32"),
    ]
    assert {r["seed"] for r in rows} == {"7"} and {r["status"] for r in rows} == {"done"}


def test_rows_carry_each_runs_own_numbers(sweep: Path, tmp_path: Path):
    report = compare([sweep], tmp_path)
    assert len(report["runs"]) == 4
    for row in read_csv(tmp_path / "comparison.csv"):
        metrics = metrics_of(sweep / row["run"])
        assert float(row["val_ppl"]) == metrics["val"]["ppl"]
        assert float(row["best_val_ppl"]) == metrics["best_val"]["ppl"]
        assert float(row["test_ppl"]) == metrics["test"]["ppl"]
        assert float(row["val_bpc"]) == metrics["val"]["bpc"]
        assert int(row["num_params"]) == metrics["num_params"]
        assert float(row["wall_seconds"]) == metrics["wall_seconds"]
        assert "model.backend=" in row["overrides"] and "data.path" not in row["overrides"]


def test_groups_pair_the_backends_with_finite_ratios(sweep: Path, tmp_path: Path):
    compare([sweep], tmp_path)
    groups = read_csv(tmp_path / "comparison_groups.csv")
    assert [g["hidden_size"] for g in groups] == ["16", "32"]
    runs = {(r["backend"], r["hidden_size"]): r for r in read_csv(tmp_path / "comparison.csv")}
    for group in groups:
        assert (group["builtin_runs"], group["custom_runs"]) == ("1", "1")
        size = group["hidden_size"]
        custom, builtin = runs["custom", size], runs["builtin", size]
        ratio = float(custom["tokens_per_sec"]) / float(builtin["tokens_per_sec"])
        assert float(group["tok_s_ratio"]) == pytest.approx(ratio, rel=1e-12)
        assert math.isfinite(ratio) and ratio > 0
        # the same seed gives the same weights on both backends: the same model, trained alike
        assert float(group["val_ppl_ratio"]) == pytest.approx(1.0, abs=1e-3)
        assert group["val_ppl_builtin_std"] == ""  # one seed: no standard deviation


def test_plots_are_valid_images_with_a_line_per_run(sweep: Path, tmp_path: Path):
    report = compare([sweep], tmp_path)
    assert sorted(p.stem for p in report["plots"]) == sorted(PLOTS)
    for name in PLOTS:
        image = matplotlib.image.imread(tmp_path / f"{name}.png")
        assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 300
    assert report["lines"] == {name: 4 for name, *_ in CURVES} | dict.fromkeys(MIXER_NAMES, 1)


def test_runs_without_tensorboard_scalars_are_named_not_drawn(
    sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    copy = copy_sweep(sweep, tmp_path / "sweep")
    shutil.rmtree(numbered(copy, 1) / "tensorboard")  # as logger=csv leaves it
    report = compare([copy])
    assert report["lines"] == {name: 3 for name, *_ in CURVES} | dict.fromkeys(MIXER_NAMES, 1)
    (line,) = [x for x in capsys.readouterr().out.splitlines() if "no TensorBoard scalars" in x]
    assert line.endswith(": " + numbered(copy, 1).name)


def test_curves_come_from_the_tensorboard_events(sweep: Path):
    for job in sorted(p for p in sweep.iterdir() if (p / "metrics.json").is_file()):
        curves = read_curves(job)
        val = curves["val/ppl"]
        assert [step for step, _, _ in val] == sorted(step for step, _, _ in val)
        assert len(val) == metrics_of(job)["epochs"]
        assert val[-1][2] == pytest.approx(metrics_of(job)["val"]["ppl"], rel=1e-5)
        assert len(curves["train/loss"]) > 1


def test_running_and_failed_runs_are_reported_and_skipped(sweep: Path, tmp_path: Path):
    copy = tmp_path / "sweep"
    shutil.copytree(sweep, copy)
    names = [numbered(copy, i).name for i in range(4)]
    (copy / names[3] / "metrics.json").unlink()  # still going (or killed)
    (copy / names[1] / "metrics.json").unlink()
    (copy / names[1] / "error.txt").write_text("model.hidden_size must be at least 1, got 0.\n")
    report = compare([copy])
    statuses = [(row["run"], row["status"]) for row in report["runs"]]
    assert statuses == list(
        zip(names, ["done", "failed", "done", "running or killed"], strict=True)
    )
    failed = next(row for row in report["runs"] if row["run"] == names[1])
    assert failed["error"] == "model.hidden_size must be at least 1, got 0."
    assert failed.get("val_ppl") is None and failed["hidden_size"] == 32  # from its config.yaml
    (group,) = report["groups"]  # hidden 32 has no finished run left
    assert group["hidden_size"] == 16 and math.isfinite(group["tok_s_ratio"])
    for name in PLOTS:
        assert (copy / f"{name}.png").is_file()


def test_run_directories_given_one_by_one_to_its_own_process(sweep: Path, tmp_path: Path):
    runs = [tmp_path / "builtin", tmp_path / "custom"]
    shutil.copytree(numbered(sweep, 0), runs[0])
    shutil.copytree(numbered(sweep, 2), runs[1])
    result = run_cli("compare", *map(str, runs), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "custom vs builtin" in result.stdout
    rows = read_csv(tmp_path / "comparison.csv")  # next to them: their common parent
    assert [r["run"] for r in rows] == ["builtin", "custom"]


@pytest.mark.parametrize("make", ["missing", "empty"])
def test_a_path_without_runs_is_one_sentence(cli, tmp_path: Path, make: str):
    target = tmp_path / make
    if make == "empty":
        target.mkdir()
    result = cli("compare", str(target))
    assert str(target) in one_sentence(result) and len(result.err.strip().splitlines()) == 1


def test_groups_differ_in_any_setting_but_seed_backend_and_where_files_go(
    sweep: Path, tmp_path: Path
):
    copy = copy_sweep(sweep, tmp_path / "sweep")
    copy_run(job(copy, "builtin", 16), copy / "4", {"seed": 8}, {"hparams.seed": 8})
    copy_run(job(copy, "custom", 16), copy / "5", {"trainer.max_epochs": 5})
    report = compare([copy])
    groups = report["groups"]
    assert [
        (g["hidden_size"], g["trainer.max_epochs"], g["builtin_runs"], g["custom_runs"])
        for g in groups
    ] == [(16, 2, 2, 1), (32, 2, 1, 1), (16, 5, 0, 1)]
    header = (copy / "comparison_groups.csv").read_text().splitlines()[0]
    assert header.startswith("arch,cell,hidden_size,seq_len,lr,trainer.max_epochs,builtin_runs,")
    assert "| runs builtin/custom |" in (copy / "comparison.md").read_text()
    means, _ = bar_heights(groups, "builtin")  # no builtin run at 5 epochs: no bar, not a 0 one
    assert means[0] > 0 and math.isnan(means[2])


def test_runs_group_by_arch_then_cell(sweep: Path, tmp_path: Path):
    """A blocks run of the same cell is a group of its own; runs from before model.arch are
    stacks."""
    copy = copy_sweep(sweep, tmp_path / "sweep")
    copy_run(job(copy, "custom", 16), copy / "blocks", {"model.arch": "blocks"})
    groups = {(g["arch"], g["cell"], g["hidden_size"]) for g in compare([copy])["groups"]}
    assert groups == {("stack", "rnn", 16), ("stack", "rnn", 32), ("blocks", "rnn", 16)}


def test_runs_group_by_cell_with_custom_over_builtin_per_cell(sweep: Path, tmp_path: Path):
    """Runs of another cell form their own groups, and each gets its own ratios."""
    copy = copy_sweep(sweep, tmp_path / "sweep")
    for backend in ("builtin", "custom"):
        copy_run(job(copy, backend, 16), copy / f"gru_{backend}", {"model.cell": "gru"})
    report = compare([copy])
    groups = {(g["cell"], g["hidden_size"]): g for g in report["groups"]}
    assert set(groups) == {("rnn", 16), ("rnn", 32), ("gru", 16)}
    for group in groups.values():
        assert (group["builtin_runs"], group["custom_runs"]) == (1, 1)
        assert math.isfinite(group["tok_s_ratio"])
    rows = {row["run"]: row for row in read_csv(copy / "comparison.csv")}
    assert rows["gru_custom"]["cell"] == "gru"
    assert report["lines"] == {name: 6 for name, *_ in CURVES} | dict.fromkeys(MIXER_NAMES, 2)


def test_nan_and_inf_are_left_out_of_means_and_ratios(sweep: Path, tmp_path: Path):
    copy = copy_sweep(sweep, tmp_path / "sweep")
    builtin = job(copy, "builtin", 16)
    copy_run(builtin, copy / "4", metrics={"val.ppl": math.nan})
    copy_run(builtin, copy / "5", metrics={"val.ppl": math.inf, "tokens_per_sec": math.inf})
    report = compare([copy])
    group = report["groups"][0]
    assert (group["hidden_size"], group["builtin_runs"]) == (16, 3)
    assert group["val_ppl_builtin"] == metrics_of(builtin)["val"]["ppl"]
    assert group["val_ppl_builtin_std"] is None  # one finite value
    assert group["tok_s_builtin"] == metrics_of(builtin)["tokens_per_sec"]
    assert group["tok_s_builtin_std"] == 0.0  # two equal finite values
    assert math.isfinite(group["val_ppl_ratio"]) and math.isfinite(group["tok_s_ratio"])
    rows = {row["run"]: row for row in report["runs"]}
    assert math.isnan(rows["4"]["val_ppl"]) and rows["5"]["val_ppl"] == math.inf


def test_unreadable_runs_are_listed_with_a_reason(cli, sweep: Path, tmp_path: Path):
    runs = tmp_path / "runs"
    shutil.copytree(numbered(sweep, 0), runs / "good")
    shutil.copytree(numbered(sweep, 0), runs / "empty")
    (runs / "empty/metrics.json").write_text("")
    shutil.copytree(numbered(sweep, 0), runs / "half")
    text = (runs / "half/metrics.json").read_text()
    (runs / "half/metrics.json").write_text(text[: len(text) // 2])
    (runs / "eval/.hydra").mkdir(parents=True)  # what rnnlab-eval leaves
    (runs / "eval/metrics.json").write_text('{"split": "test", "loss": 1.5, "ppl": 4.48}\n')
    (runs / "other").mkdir()
    (runs / "other/config.yaml").write_text("lr: 0.1\n")
    result = cli("compare", str(runs))
    assert result.code == 0, result.err[-2000:]
    assert "Traceback" not in result.out + result.err
    rows = {row["run"]: row for row in read_csv(runs / "comparison.csv")}
    assert {name: row["status"] for name, row in rows.items()} == {
        "good": "done",
        **dict.fromkeys(("empty", "eval", "half", "other"), "unreadable"),
    }
    assert rows["empty"]["error"].startswith("metrics.json cannot be read: it is empty")
    assert rows["half"]["error"].startswith("metrics.json cannot be read: ")
    assert rows["eval"]["error"].startswith("metrics.json has no 'hparams'")
    assert rows["other"]["error"] == "config.yaml is not an rnnlab-train config (it has no 'model')"
    assert rows["half"]["hidden_size"] == "16"  # its config.yaml was read
    assert "run other is unreadable: config.yaml" in result.out


def test_out_pointing_at_a_file_is_one_sentence(cli, sweep: Path, tmp_path: Path):
    target = tmp_path / "report.md"
    target.write_text("")
    sentence = one_sentence(cli("compare", str(sweep), "--out", str(target)))
    assert sentence.startswith("--out ") and str(target) in sentence


def test_two_sweeps_together_name_runs_by_path_and_count_each_once(sweep: Path, tmp_path: Path):
    a, b = copy_sweep(sweep, tmp_path / "a"), copy_sweep(sweep, tmp_path / "b")
    first, second = numbered(a, 0).name, numbered(b, 1).name
    report = compare([a, b, a / first, b / ".." / "b" / second])  # named twice: read once
    assert report["out_dir"] == tmp_path
    names = [numbered(sweep, j).name for j in range(4)]
    assert [row["run"] for row in report["runs"]] == [f"{s}/{name}" for s in "ab" for name in names]
    assert [(g["builtin_runs"], g["custom_runs"]) for g in report["groups"]] == [(2, 2), (2, 2)]


def test_a_crashed_job_leaves_the_report_of_the_sweep(sweep: Path, tmp_path: Path):
    copy = copy_sweep(sweep, tmp_path / "sweep")
    last = numbered(copy, 3)
    (last / "metrics.json").unlink()  # Hydra's sweeper re-raises: no on_multirun_end
    crashed = JobReturn(status=JobStatus.FAILED, _return_value=RuntimeError("boom\nstack"))
    SweepReport(compare=True).on_job_end(multirun_config(copy, last), crashed)
    for name in (*REPORT, "summary.csv", "summary.md"):
        assert (copy / name).is_file(), name
    rows = {row["run"]: row for row in read_csv(copy / "comparison.csv")}
    assert (rows[last.name]["status"], rows[last.name]["error"]) == ("failed", "RuntimeError: boom")


def test_a_report_that_cannot_be_written_never_fails_the_job(
    sweep: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    def broken(*args: Any, **kwargs: Any) -> None:
        raise OSError("No space left on device")

    monkeypatch.setattr(rnnlab.report.sweep, "compare", broken)
    done = JobReturn(status=JobStatus.COMPLETED, _return_value=1.0)
    SweepReport(compare=True).on_job_end(multirun_config(sweep, numbered(sweep, 0)), done)
    out = capsys.readouterr().out
    assert "sweep report not written: OSError: No space left on device" in out


def test_the_mixers_are_drawn_a_line_per_cell_and_read_at_fixed_minutes(sweep: Path, tmp_path):
    """Two of the four jobs relabelled as another cell: two lines with a band over two
    runs each, and each cell's val loss at 5 to 29 minutes, blank for runs of seconds,
    beside what the runs cost."""
    copy = copy_sweep(sweep, tmp_path / "sweep")
    for num in (0, 1):
        config = numbered(copy, num) / "config.yaml"
        config.write_text(config.read_text().replace("cell: rnn", "cell: gru", 1))
    report = compare([copy])
    assert report["lines"]["val_loss_by_time_per_cell"] == 2
    rows = {row["cell"]: row for row in report["minutes"]}
    assert sorted(rows) == ["gru", "rnn"] and {row["runs"] for row in rows.values()} == {2}
    for cell, jobs in (("gru", (0, 1)), ("rnn", (2, 3))):
        assert [rows[cell][f"val at {minutes} min"] for minutes in MINUTES] == [None] * 4
        for key, column in (("tokens_per_sec", "tokens/s"), ("num_params", "params")):
            values = [metrics_of(numbered(copy, n))[key] for n in jobs]
            assert rows[cell][column] == round(sum(values) / 2)
        assert rows[cell]["peak MB"] > 0  # this sweep ran on Linux
    assert "| cell | runs | val at 5 min |" in (copy / "comparison.md").read_text()
    assert "| tokens/s | peak MB |" in (copy / "comparison.md").read_text()


def test_a_runs_val_curve_by_tokens_and_what_was_known_when():
    run = {
        "curves": {"val/loss": [(10, 100.0, 3.0), (20, 160.0, 2.5)]},
        "start": 40.0,
        "settings": {"data.batch_size": 4, "data.seq_len": 8},
    }
    assert val_curve(run, "seconds") == [(60.0, 3.0), (120.0, 2.5)]
    assert val_curve(run, "tokens") == [(320.0, 3.0), (640.0, 2.5)]
    curve = val_curve(run, "seconds")
    assert [known_at(curve, x) for x in (59.0, 60.0, 119.9, 500.0)] == [None, 3.0, 3.0, 2.5]
    # a budget of one minute: the validation after the stop scores that minute, read there
    run["settings"]["trainer.max_time"] = "00:00:01:00"
    assert val_curve(run, "seconds") == [(60.0, 3.0), (60.0, 2.5)]
    assert minutes_table([{**run, "shown": {"cell": "gru"}}], [1])[0]["val at 1 min"] == 2.5


def synthetic_run(cell: str, points: list[tuple[int, float, float]]) -> dict:
    """A run of ``cell`` whose val loss was ``value`` at ``(step, wall seconds, value)``."""
    return {
        "shown": {"cell": cell},
        "curves": {"val/loss": points},
        "start": 0.0,
        "settings": {"data.batch_size": 10, "data.seq_len": 100},  # 1,000 tokens a step
    }


def test_where_two_lines_cross_and_who_leads_at_each_minute():
    """The fast starter leads by time until the other passes it (at 29 minutes); by tokens
    the other, which reads half as many tokens a second, is ahead from the start."""
    fast = synthetic_run("lstm", [(100, 300, 2.0), (200, 900, 1.8), (300, 1740, 1.7)])
    slow = [
        synthetic_run("attention", [(50, 300, 2.4), (100, 900, 1.9), (150, 1740, 1.6)]),
        synthetic_run("attention", [(50, 300, 2.2), (100, 900, 1.9), (150, 1740, 1.5)]),
    ]
    runs = [fast, *slow]
    assert crossings(runs, "seconds") == [{"seconds": 1740, "ahead": "attention", "behind": "lstm"}]
    assert crossings(runs, "tokens") == []
    read_at = table_minutes(runs)
    rows = minutes_table(runs, read_at)
    assert rows[1]["cell"] == "attention" and rows[1]["val at 29 min"] == pytest.approx(1.55)
    assert leaders(rows, read_at) == {5: "lstm", 10: "lstm", 20: "lstm", 29: "attention"}
    text = crossings_markdown(runs, rows, read_at)
    assert "Ahead: lstm at 5 min, lstm at 10 min, lstm at 20 min, attention at 29 min" in text
    assert "| 29.0 | attention | lstm |" in text and "By tokens: no lines cross." in text
    assert crossings([fast], "seconds") == []


def test_a_long_run_is_read_at_each_half_hour_it_reached():
    """Two-hour runs (the crossover) add 60, 90 and 120 minutes to the table."""
    long = synthetic_run("mingru", [(100, 1800, 1.6), (200, 7200, 1.4)])
    short = synthetic_run("mingru", [(100, 1740, 1.8)])
    assert table_minutes([short]) == [5, 10, 20, 29]
    assert table_minutes([long, short]) == [5, 10, 20, 29, 60, 90, 120]
    read_at = table_minutes([long, short])
    (row,) = minutes_table([long, short], read_at)
    assert (row["val at 20 min"], row["val at 29 min"]) == (None, 1.8)  # long: none yet
    assert row["val at 90 min"] == 1.6 and row["val at 120 min"] == 1.4  # the long run alone
    assert "val at 120 min" in minute_columns(table_minutes([long, short]))


def test_a_runs_budget_end_is_a_minute_of_the_table():
    """The word leg's 44-minute budget is read at its end, the validation after the stop."""
    word = synthetic_run("gru", [(100, 1200, 5.2), (200, 2700, 4.9)])
    word["settings"]["trainer.max_time"] = "00:00:44:00"
    assert table_minutes([word]) == [5, 10, 20, 29, 44]
    (row,) = minutes_table([word], [5, 10, 20, 29, 44])
    assert (row["val at 29 min"], row["val at 44 min"]) == (5.2, 4.9)
