"""Sweep summaries: ``summary.csv`` and ``summary.md`` at the root of every multirun.

A Hydra callback (configs/hydra/default.yaml). After each job it records a failed
job's one-line error in that job's ``error.txt`` and rewrites the summary from every
job directory found so far, so the summary is there, failures included, even if a
crash ends the sweep early. It reads only what jobs wrote: metrics.json, error.txt
and Hydra's overrides.yaml.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any

import yaml
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

COLUMNS = (
    "job",
    "status",
    "overrides",
    "backend",
    "hidden_size",
    "seq_len",
    "lr",
    "seed",
    "best_val_ppl",
    "val_bpc",
    "test_ppl",
    "tokens_per_sec",
    "train_seconds",
    "error",
)


def job_row(job_dir: Path) -> dict[str, Any]:
    """One summary row from what a job left in its directory."""
    overrides_file = job_dir / ".hydra/overrides.yaml"
    overrides = yaml.safe_load(overrides_file.read_text()) if overrides_file.is_file() else []
    row: dict[str, Any] = {"job": job_dir.name, "overrides": " ".join(overrides or [])}
    error_file, metrics_file = job_dir / "error.txt", job_dir / "metrics.json"
    if error_file.is_file():
        return {**row, "status": "failed", "error": error_file.read_text().strip()}
    if not metrics_file.is_file():
        return {**row, "status": "running or killed"}
    metrics = json.loads(metrics_file.read_text())
    hparams = metrics["hparams"]
    return {
        **row,
        "status": "done",
        **{key: hparams.get(key) for key in ("backend", "hidden_size", "seq_len", "lr", "seed")},
        "best_val_ppl": metrics["best_val"].get("ppl"),
        "val_bpc": metrics["val"].get("bpc"),
        "test_ppl": metrics["test"].get("ppl"),
        "tokens_per_sec": metrics["tokens_per_sec"],
        "train_seconds": metrics["train_seconds"],
    }


def cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def write_atomically(path: Path, text: str) -> None:
    """Readers (and a parallel job's writer) never see half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_summary(sweep_dir: Path) -> list[dict[str, Any]]:
    """summary.csv and summary.md from every job directory of ``sweep_dir``."""
    jobs = sorted(
        (d for d in sweep_dir.iterdir() if (d / ".hydra").is_dir()),
        key=lambda d: (len(d.name), d.name),
    )
    rows = [job_row(d) for d in jobs]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, COLUMNS)
    writer.writeheader()
    writer.writerows({k: cell(row.get(k)) for k in COLUMNS} for row in rows)
    write_atomically(sweep_dir / "summary.csv", buffer.getvalue())
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += [
        "| " + " | ".join(cell(row.get(k)).replace("|", "\\|") for k in COLUMNS) + " |"
        for row in rows
    ]
    write_atomically(sweep_dir / "summary.md", "\n".join(lines) + "\n")
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
