"""Runs as table rows, and tables as text: CSV for programs, Markdown for people.

One row per run (:data:`RUN_COLUMNS`) serves the sweep summary and ``rnnlab-compare``.
"""

from __future__ import annotations

import csv
import io
from typing import Any

from rnnlab.report.runs import SHOWN

#: the gradient's reach in steps, of layer 0, that callbacks=dynamics logs
REACH_TAG = "dynamics/reach/l0"

#: One row per run: its identity, what it was, and the numbers it ended with.
RUN_COLUMNS = (
    "run",
    "status",
    "overrides",
    *SHOWN,
    "val_loss",
    "val_ppl",
    "best_val_ppl",
    "val_bpc",
    "test_ppl",
    "grad_reach",
    "tokens_per_sec",
    "wall_seconds",
    "num_params",
    "error",
)


def run_rows(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Table rows of runs read by :func:`~rnnlab.report.runs.read_run`; overrides that all
    of them share dropped."""
    shared = set.intersection(*(set(run["overrides"]) for run in runs)) if len(runs) > 1 else set()
    return [
        {**run_row(run), "overrides": " ".join(o for o in run["overrides"] if o not in shared)}
        for run in runs
    ]


def run_row(run: dict[str, Any]) -> dict[str, Any]:
    """The :data:`RUN_COLUMNS` of a run (missing numbers left out)."""
    row = {key: run.get(key) for key in ("run", "status", "overrides", "error")}
    row.update(run["shown"])
    reaches = run.get("curves", {}).get(REACH_TAG)
    if reaches:
        row["grad_reach"] = reaches[-1][2]  # at the end of training
    metrics = run["metrics"]
    if metrics:
        row.update(
            val_loss=metrics["val"].get("loss"),
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
