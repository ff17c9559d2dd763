"""SweepReport: a multirun's summary, and with ``compare: true`` its comparison, kept up to date.

A Hydra callback (configs/hydra/default.yaml; experiment=compare_backends turns the
comparison on). When the sweep starts it names the job directories (and so their
TensorBoard runs) by what each job varies, ``3_model.backend-custom+model.hidden_size-128``,
leaving out the overrides that every job shares. After each job it records a crashed
job's one-line error in that job's ``error.txt`` and rewrites the reports from every
job directory found so far: Hydra's basic sweeper re-raises a crashed job's exception
before ``on_multirun_end``, so the reports of the jobs that did run must not wait for
the last one. When the sweep ends they are written once more, so jobs that finished
together in parallel all appear. Writing a report never fails a job: a full disk or a
bug here is a warning.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import rich
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, read_write

from rnnlab.atomic import write_text_atomically
from rnnlab.report.compare import compare
from rnnlab.report.runs import holds_runs
from rnnlab.report.summary import write_summary


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


def name_jobs_by_what_they_vary(config: DictConfig) -> None:
    """Leave the overrides every job of the sweep shares out of its jobs' directory names.

    Hydra names a job by all its overrides (``hydra.job.override_dirname``). The ones
    that vary are the sweeps on the command line (``a=1,2``, ``choice(...)``) and the
    sweeper's own ``params``; the rest join ``override_dirname.exclude_keys`` through the
    Hydra overrides every job of this sweep is composed with.
    """
    overrides = OverridesParser.create().parse_overrides(list(config.hydra.overrides.task))
    swept = {o.key_or_group for o in overrides if o.is_sweep_override()}
    swept |= set(config.hydra.sweeper.get("params") or {})
    shared = sorted({o.key_or_group for o in overrides} - swept)
    if not shared:
        return
    excluded = [*config.hydra.job.config.override_dirname.exclude_keys, *shared]
    listed = ",".join(f"'{key}'" for key in excluded)
    with read_write(config.hydra.overrides):
        config.hydra.overrides.hydra.append(
            f"hydra.job.config.override_dirname.exclude_keys=[{listed}]"
        )


class SweepReport(Callback):
    """``summary.csv`` / ``summary.md`` (and the comparison) of a multirun, after every job."""

    def __init__(self, compare: bool = False) -> None:
        self.compare = compare

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        name_jobs_by_what_they_vary(config)

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if config.hydra.mode != RunMode.MULTIRUN:
            return
        record_failure(config, job_return)
        self.write(Path(config.hydra.sweep.dir), verbose=False)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self.write(Path(config.hydra.sweep.dir), verbose=True)

    def write(self, sweep_dir: Path, verbose: bool) -> None:
        """The reports of a sweep's runs so far (none before its first job starts)."""
        if not holds_runs(sweep_dir):
            return
        try:
            write_summary(sweep_dir)
            if self.compare:
                report = compare([sweep_dir], verbose=verbose)
        except Exception as exc:  # a job's result must not hang on its report
            rich.print(f"[yellow]sweep report not written: {type(exc).__name__}: {exc}[/yellow]")
            return
        if self.compare and verbose:
            rich.print(f"comparison report in {report['out_dir']}")
