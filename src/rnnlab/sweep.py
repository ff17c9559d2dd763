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

from rnnlab.atomic import write_text_atomically
from rnnlab.runs import (
    RUN_COLUMNS,
    csv_text,
    find_runs,
    holds_runs,
    markdown_table,
    read_run,
    run_rows,
)


def write_summary(sweep_dir: Path) -> list[dict[str, Any]]:
    """summary.csv and summary.md from every job directory of ``sweep_dir``."""
    rows = run_rows([read_run(job) for job in find_runs([sweep_dir])])
    write_text_atomically(sweep_dir / "summary.csv", csv_text(RUN_COLUMNS, rows))
    write_text_atomically(sweep_dir / "summary.md", markdown_table(RUN_COLUMNS, rows))
    return rows


def record_failure(config: DictConfig, job_return: JobReturn) -> None:
    """A crashed job's one-line error in its ``error.txt``, so reports list it as failed.

    A user mistake never gets here: it wrote its own sentence and the job returned.
    """
    if job_return.status != JobStatus.FAILED:
        return
    error = job_return._return_value  # the exception; .return_value would re-raise it
    job_dir = Path(config.hydra.runtime.output_dir)
    line = f"{type(error).__name__}: {error}".split("\n")[0]
    write_text_atomically(job_dir / "error.txt", line)


class SweepSummary(Callback):
    """Keeps ``summary.csv`` / ``summary.md`` of a multirun up to date after every job."""

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if config.hydra.mode != RunMode.MULTIRUN:
            return
        record_failure(config, job_return)
        write_summary(Path(config.hydra.sweep.dir))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if holds_runs(sweep_dir):
            write_summary(sweep_dir)
