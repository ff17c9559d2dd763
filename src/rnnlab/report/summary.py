"""A sweep's ``summary.csv`` and ``summary.md``: one row per job, failures included."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rnnlab.atomic import write_text_atomically
from rnnlab.report.runs import find_runs, read_run
from rnnlab.report.tables import RUN_COLUMNS, csv_text, markdown_table, run_rows


def write_summary(sweep_dir: Path) -> list[dict[str, Any]]:
    """summary.csv and summary.md from every job directory of ``sweep_dir``; returns the rows."""
    rows = run_rows([read_run(job) for job in find_runs([sweep_dir])])
    write_text_atomically(sweep_dir / "summary.csv", csv_text(RUN_COLUMNS, rows))
    write_text_atomically(sweep_dir / "summary.md", markdown_table(RUN_COLUMNS, rows))
    return rows
