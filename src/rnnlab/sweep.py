"""Sweep summaries: ``summary.csv`` and ``summary.md`` at the root of every multirun.

A Hydra callback (configs/hydra/default.yaml). After each job it records a failed
job's one-line error in that job's ``error.txt`` and rewrites the summary from every
job directory found so far, so the summary is there, failures included, even if a
crash ends the sweep early; when the sweep ends it is written once more, so jobs that
finished together in parallel all appear. It reads only what jobs wrote
(:mod:`rnnlab.runs`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from rnnlab.runs import (
    RUN_COLUMNS,
    csv_text,
    find_runs,
    markdown_table,
    read_run,
    run_rows,
    write_atomically,
)


def write_summary(sweep_dir: Path) -> list[dict[str, Any]]:
    """summary.csv and summary.md from every job directory of ``sweep_dir``."""
    rows = run_rows([read_run(job) for job in find_runs([sweep_dir])])
    write_atomically(sweep_dir / "summary.csv", csv_text(RUN_COLUMNS, rows))
    write_atomically(sweep_dir / "summary.md", markdown_table(RUN_COLUMNS, rows))
    return rows


class SweepSummary(Callback):
    """Keeps ``summary.csv`` / ``summary.md`` of a multirun up to date after every job."""

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if config.hydra.mode != RunMode.MULTIRUN:
            return
        job_dir = Path(config.hydra.runtime.output_dir)
        if job_return.status == JobStatus.FAILED:
            error = job_return._return_value  # the exception; .return_value would re-raise it
            (job_dir / "error.txt").write_text(f"{type(error).__name__}: {error}".split("\n")[0])
        write_summary(Path(config.hydra.sweep.dir))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if sweep_dir.is_dir() and any(d.is_dir() for d in sweep_dir.iterdir()):
            write_summary(sweep_dir)
