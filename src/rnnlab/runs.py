"""Run directories as data: what a run left behind, read back for summaries and reports.

A run directory (``logs/train/runs/<stamp>`` or one job of a sweep) holds
``config.yaml`` from its start, ``metrics.json`` once it finished, ``error.txt`` if
it failed on a user mistake, and TensorBoard event files under ``tensorboard/``.
The sweep summary and ``rnnlab-compare`` read runs through these functions only, so
a run still going or one that failed is reported the same way by both.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf

from rnnlab.errors import UserError

#: The hyperparameters every table shows, whether they vary or not.
KEY_HPARAMS = ("backend", "hidden_size", "seq_len", "lr", "seed")

#: One row per run: its identity, what it was, and the numbers it ended with.
RUN_COLUMNS = (
    "run",
    "status",
    "overrides",
    *KEY_HPARAMS,
    "val_ppl",
    "best_val_ppl",
    "val_bpc",
    "test_ppl",
    "tokens_per_sec",
    "wall_seconds",
    "num_params",
    "error",
)

#: Files that make a directory a run (a sweep directory has none of them itself).
RUN_MARKERS = ("config.yaml", "metrics.json", "error.txt", ".hydra")


def is_run(path: Path) -> bool:
    return any((path / marker).exists() for marker in RUN_MARKERS)


def find_runs(paths: list[Path]) -> list[Path]:
    """Run directories among ``paths``: each is a run, or a sweep whose job directories are."""
    runs: list[Path] = []
    for path in paths:
        if not path.is_dir():
            raise UserError(
                f"{path} is not a directory; pass a sweep directory or run directories."
            )
        if is_run(path):
            runs.append(path)
            continue
        jobs = sorted(
            (d for d in path.iterdir() if d.is_dir() and is_run(d)),
            key=lambda d: (len(d.name), d.name),  # sweep jobs 0, 1, ..., 10 in order
        )
        if not jobs:
            raise UserError(
                f"{path} holds no rnnlab runs (no config.yaml or metrics.json in it or its "
                "subdirectories); pass a sweep directory or run directories."
            )
        runs += jobs
    return runs


def run_hparams(config: dict[str, Any]) -> dict[str, Any]:
    """The hyperparameters a sweep varies, flat, from a run's resolved config."""
    model, data = config["model"], config["data"]
    return {
        "backend": model["backend"],
        "level": data["level"],
        "hidden_size": model["hidden_size"],
        "num_layers": model["num_layers"],
        "seq_len": data["seq_len"],
        "batch_size": data["batch_size"],
        "lr": model["optimizer"]["lr"],
        "optimizer": model["optimizer"]["_target_"].rsplit(".", 1)[-1],
        "dropout": model["dropout"],
        "nonlinearity": model["nonlinearity"],
        "embedding_dim": model["embedding_dim"] or model["hidden_size"],
        "tie_weights": model["tie_weights"],
        "bptt": model["bptt"],
        "seed": config["seed"],
    }


def read_run(run_dir: Path) -> dict[str, Any]:
    """Status, hyperparameters and final metrics of one run, as far as it got."""
    overrides_file = run_dir / ".hydra/overrides.yaml"
    overrides = yaml.safe_load(overrides_file.read_text()) if overrides_file.is_file() else []
    config_file, metrics_file = run_dir / "config.yaml", run_dir / "metrics.json"
    error_file = run_dir / "error.txt"
    run: dict[str, Any] = {
        "path": run_dir,
        "run": run_dir.name,
        "overrides": overrides or [],
        "hparams": {},
        "metrics": None,
    }
    if config_file.is_file():
        config = OmegaConf.to_container(OmegaConf.load(config_file))
        run["hparams"] = run_hparams(config)  # type: ignore[arg-type]
    if error_file.is_file():
        return {**run, "status": "failed", "error": error_file.read_text().strip()}
    if not metrics_file.is_file():
        return {**run, "status": "running or killed"}
    metrics = json.loads(metrics_file.read_text())
    return {**run, "status": "done", "hparams": metrics["hparams"], "metrics": metrics}


def run_rows(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Table rows of runs read by :func:`read_run`; overrides that all of them share dropped."""
    shared = set.intersection(*(set(run["overrides"]) for run in runs)) if len(runs) > 1 else set()
    return [
        {**run_row(run), "overrides": " ".join(o for o in run["overrides"] if o not in shared)}
        for run in runs
    ]


def run_row(run: dict[str, Any]) -> dict[str, Any]:
    """The :data:`RUN_COLUMNS` of a run read by :func:`read_run` (missing numbers left out)."""
    row = {key: run.get(key) for key in ("run", "status", "overrides", "error")}
    row.update({key: run["hparams"].get(key) for key in KEY_HPARAMS})
    metrics = run["metrics"]
    if metrics:
        row.update(
            val_ppl=metrics["val"].get("ppl"),
            best_val_ppl=metrics["best_val"].get("ppl"),
            val_bpc=metrics["val"].get("bpc"),
            test_ppl=metrics["test"].get("ppl"),
            tokens_per_sec=metrics["tokens_per_sec"],
            wall_seconds=metrics["wall_seconds"],
            num_params=metrics["num_params"],
        )
    return row


def cell(value: Any) -> str:
    """A table cell: 4 significant digits (whole numbers from 1000 up), empty if missing."""
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    return "" if value is None else str(value)


def write_atomically(path: Path, text: str) -> None:
    """Readers (and a parallel job's writer) never see half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def csv_text(columns: tuple[str, ...], rows: list[dict[str, Any]]) -> str:
    """CSV at full precision (tables for people round; files for programs do not)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def markdown_table(columns: tuple[str, ...], rows: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += [
        "| " + " | ".join(cell(row.get(k)).replace("|", "\\|") for k in columns) + " |"
        for row in rows
    ]
    return "\n".join(lines) + "\n"
