"""Sweeps: one bad job never stops the others, and the summary lists every job."""

import csv
import math
from pathlib import Path

from hydra.core.utils import JobReturn, JobStatus
from hydra.types import RunMode
from omegaconf import OmegaConf

from rnnlab.sweep import SweepSummary
from tests.conftest import TINY_RUN, run_cli

SMALL = [o for o in TINY_RUN if not o.startswith("model.hidden_size")]


def test_sweep_summary_lists_every_job_with_failures(tiny_corpus: Path, tmp_path: Path):
    sweep = tmp_path / "sweep"
    result = run_cli(
        "train",
        "-m",
        f"data.path={tiny_corpus}",
        *SMALL,
        "model.hidden_size=0,16",
        "trainer.max_epochs=1",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    rows = list(csv.DictReader((sweep / "summary.csv").open()))
    assert [(r["job"], r["status"]) for r in rows] == [("0", "failed"), ("1", "done")]
    assert rows[0]["error"] == "model.hidden_size must be at least 1, got 0."
    assert "model.hidden_size=0" in rows[0]["overrides"]
    assert rows[1]["hidden_size"] == "16" and math.isfinite(float(rows[1]["best_val_ppl"]))
    assert (sweep / "summary.md").read_text().count("\n") == 2 + 2


def test_a_crashed_job_gets_its_one_line_error(tmp_path: Path):
    job_dir = tmp_path / "0"
    (job_dir / ".hydra").mkdir(parents=True)
    (job_dir / ".hydra/overrides.yaml").write_text("- model.hidden_size=8\n")
    config = OmegaConf.create(
        {
            "hydra": {
                "mode": RunMode.MULTIRUN,
                "runtime": {"output_dir": str(job_dir)},
                "sweep": {"dir": str(tmp_path)},
            }
        }
    )
    failed = JobReturn(status=JobStatus.FAILED, _return_value=RuntimeError("boom\nstack"))
    SweepSummary().on_job_end(config, failed)
    assert (job_dir / "error.txt").read_text() == "RuntimeError: boom"
    (row,) = csv.DictReader((tmp_path / "summary.csv").open())
    assert row["status"] == "failed" and row["overrides"] == "model.hidden_size=8"
