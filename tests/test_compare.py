"""rnnlab-compare on a real 2 x 2 sweep (backend x hidden size) of experiment=compare_backends."""

import csv
import json
import math
import shutil
from pathlib import Path

import matplotlib.image
import pytest

from rnnlab.compare import compare, read_curves
from tests.conftest import TINY_RUN, TINY_TEXT, run_cli

PLOTS = ("val_ppl_by_step", "val_ppl_by_time", "train_loss_by_step", "tokens_per_sec")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """experiment=compare_backends cut to one seed and two tiny hidden sizes: 4 jobs."""
    root = tmp_path_factory.mktemp("compare")
    (root / "tiny.txt").write_text(TINY_TEXT, encoding="utf-8")
    small = [o for o in TINY_RUN if not o.startswith("model.hidden_size")]
    result = run_cli(
        "train",
        "-m",
        "experiment=compare_backends",
        f"data.path={root / 'tiny.txt'}",
        *small,
        "model.hidden_size=16,32",
        "seed=7",
        f"hydra.sweep.dir={root / 'sweep'}",
        cwd=root,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return root / "sweep"


def metrics_of(job: Path) -> dict:
    return json.loads((job / "metrics.json").read_text())


def read_csv(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(path.open()))


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


def test_plots_are_valid_images(sweep: Path, tmp_path: Path):
    report = compare([sweep], tmp_path)
    assert sorted(p.stem for p in report["plots"]) == sorted(PLOTS)
    for name in PLOTS:
        image = matplotlib.image.imread(tmp_path / f"{name}.png")
        assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 300
        assert image.std() > 0.01  # something was drawn


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
    (copy / "3" / "metrics.json").unlink()  # still going (or killed)
    (copy / "1" / "metrics.json").unlink()
    (copy / "1" / "error.txt").write_text("model.hidden_size must be at least 1, got 0.\n")
    report = compare([copy])
    statuses = {row["run"]: row["status"] for row in report["runs"]}
    assert statuses == {"0": "done", "1": "failed", "2": "done", "3": "running or killed"}
    failed = next(row for row in report["runs"] if row["run"] == "1")
    assert failed["error"] == "model.hidden_size must be at least 1, got 0."
    assert failed.get("val_ppl") is None and failed["hidden_size"] == 32  # from its config.yaml
    (group,) = report["groups"]  # hidden 32 has no finished run left
    assert group["hidden_size"] == 16 and math.isfinite(group["tok_s_ratio"])
    for name in PLOTS:
        assert (copy / f"{name}.png").is_file()


def test_run_directories_given_one_by_one(sweep: Path, tmp_path: Path):
    runs = [tmp_path / "builtin", tmp_path / "custom"]
    shutil.copytree(sweep / "0", runs[0])
    shutil.copytree(sweep / "2", runs[1])
    result = run_cli("compare", *map(str, runs), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "custom vs builtin" in result.stdout
    rows = read_csv(tmp_path / "comparison.csv")  # next to them: their common parent
    assert [r["run"] for r in rows] == ["builtin", "custom"]


@pytest.mark.parametrize("make", ["missing", "empty"])
def test_a_path_without_runs_is_one_sentence(tmp_path: Path, make: str):
    target = tmp_path / make
    if make == "empty":
        target.mkdir()
    result = run_cli("compare", str(target), cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and str(target) in line
