"""One report of many runs, custom against builtin (``rnnlab-compare``, a sweep's report).

Reads each run's metrics.json, config.yaml and TensorBoard events
(:mod:`rnnlab.report.runs`), and writes next to them:

- ``comparison.md`` / ``comparison.csv``: one row per run, then
  ``comparison_groups.csv``: runs whose resolved configs differ only in seed and
  backend (and where their files go) grouped, mean and standard deviation over seeds
  per backend, and the custom / builtin ratios of tokens per second and of final val ppl;
- PNG plots (:mod:`rnnlab.report.plots`): val ppl against step and against wall-clock
  time, train loss against step, tokens per second by backend;
- the mixers side by side (:mod:`rnnlab.report.mixers`): val loss against wall-clock time
  and against tokens seen, a line per cell with a band over its seeds, and in
  ``comparison.md`` (and ``comparison_minutes.csv``) each cell's val loss at 5, 10, 20 and
  29 minutes with its tokens/s and peak memory, who leads at each, and where lines cross.

Runs still going, killed, failed or unreadable are listed with their status; their
missing numbers are left out of the groups, and their curves are drawn as far as they
got. A NaN or infinite number (a diverged run) is listed but left out of the means.
"""

from __future__ import annotations

import math
import os
import statistics
from pathlib import Path
from typing import Any

import rich
import rich.console
import rich.table

from rnnlab.atomic import write_text_atomically
from rnnlab.errors import UserError
from rnnlab.nn import BACKENDS
from rnnlab.report.mixers import (
    crossings_markdown,
    minute_columns,
    minutes_table,
    plot_mixers,
    table_minutes,
)
from rnnlab.report.plots import plot_curves, plot_tokens_per_sec
from rnnlab.report.runs import SHOWN, find_runs, read_curves, read_run
from rnnlab.report.tables import RUN_COLUMNS, cell, csv_text, markdown_table, run_row, run_rows

#: the columns every group shows (by their short names) besides the settings that vary
GROUP_SHOWN = ("arch", "cell", "hidden_size", "seq_len", "lr")

#: the per-backend numbers of a group: (column, run column)
GROUP_METRICS = (
    ("val_ppl", "val_ppl"),
    ("best_val_ppl", "best_val_ppl"),
    ("tok_s", "tokens_per_sec"),
)


def group_keys(runs: list[dict[str, Any]]) -> list[str]:
    """Columns that tell groups apart: the usual three, and every other setting that varies.

    Settings are the dotted keys of each finished run's resolved config
    (:func:`rnnlab.report.runs.run_settings`), so runs trained for a different number of epochs
    or on other data are never pooled, and the table says by which key they differ.
    """
    done = [run for run in runs if run["status"] == "done"]
    varying = [
        key
        for key in setting_names(done)
        if len({repr(run["settings"].get(key)) for run in done}) > 1
    ]
    shown_keys = {SHOWN[name] for name in GROUP_SHOWN}
    return [*GROUP_SHOWN, *(k for k in varying if k not in shown_keys)]


def setting_names(runs: list[dict[str, Any]]) -> list[str]:
    """Every setting any of ``runs`` has (one missing elsewhere counts as differing)."""
    return sorted({key for run in runs for key in run["settings"]})


def group_value(run: dict[str, Any], key: str) -> Any:
    """A group column of a run: one of :data:`GROUP_SHOWN` by its short name, else a setting."""
    return run["shown"].get(key) if key in GROUP_SHOWN else run["settings"].get(key)


def finite(values: list[Any]) -> list[float]:
    """The numbers among ``values`` that are neither missing nor NaN nor infinite."""
    return [v for v in values if isinstance(v, int | float) and math.isfinite(v)]


def mean_std(values: list[Any]) -> tuple[float | None, float | None]:
    """Mean and std of the finite values: a diverged run's NaN or inf would make both NaN."""
    values = finite(values)
    if not values:
        return None, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def group_rows(runs: list[dict[str, Any]], keys: list[str]) -> list[dict[str, Any]]:
    """One row per group of finished runs: mean/std over seeds per backend, custom/builtin."""
    done = [run for run in runs if run["status"] == "done"]
    names = setting_names(done)
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for run in done:
        key = tuple(repr(run["settings"].get(name)) for name in names)
        groups.setdefault(key, []).append(run)
    return [group_row(members, keys) for members in groups.values()]


def group_row(members: list[dict[str, Any]], keys: list[str]) -> dict[str, Any]:
    """A group's columns; its means skip runs without a number, so a killed seed costs no row."""
    row: dict[str, Any] = {k: group_value(members[0], k) for k in keys}
    for backend in BACKENDS:
        mine = [run_row(r) for r in members if r["shown"].get("backend") == backend]
        row[f"{backend}_runs"] = len(mine)
        for name, column in GROUP_METRICS:
            mean, std = mean_std([r.get(column) for r in mine])
            row[f"{name}_{backend}"], row[f"{name}_{backend}_std"] = mean, std
    for name in ("val_ppl", "tok_s"):
        custom, builtin = row[f"{name}_custom"], row[f"{name}_builtin"]
        row[f"{name}_ratio"] = custom / builtin if custom and builtin else None
    return row


def group_columns(keys: list[str]) -> tuple[str, ...]:
    per_backend = [
        f"{name}_{backend}{suffix}"
        for name, _ in GROUP_METRICS
        for backend in BACKENDS
        for suffix in ("", "_std")
    ]
    runs = [f"{backend}_runs" for backend in BACKENDS]
    return (*keys, *runs, *per_backend, "val_ppl_ratio", "tok_s_ratio")


def plus_minus(row: dict[str, Any], column: str) -> str:
    """``mean ± std`` of a group column (just the mean for a single seed)."""
    mean, std = row.get(column), row.get(f"{column}_std")
    if mean is None:
        return ""
    if std is None:
        return cell(mean)
    return f"{cell(mean)} ± " + (f"{std:,.0f}" if std >= 100 else f"{std:.2g}")


def display_groups(
    rows: list[dict[str, Any]], keys: list[str]
) -> tuple[list[str], list[list[str]]]:
    """The grouped table as people read it: means ± std, one column per backend."""
    header = [*keys, "runs builtin/custom"]
    for name, _ in GROUP_METRICS:
        header += [f"{name} builtin", f"{name} custom"]
    header += ["val_ppl custom/builtin", "tok_s custom/builtin"]
    body = []
    for row in rows:
        line = [cell(row[k]) for k in keys] + [f"{row['builtin_runs']}/{row['custom_runs']}"]
        for name, _ in GROUP_METRICS:
            line += [plus_minus(row, f"{name}_{b}") for b in BACKENDS]
        line += [cell(row["val_ppl_ratio"]), cell(row["tok_s_ratio"])]
        body.append(line)
    return header, body


def default_out_dir(paths: list[Path]) -> Path:
    """Next to the runs: the one directory given, or the closest directory holding them all."""
    if len(paths) == 1:
        return paths[0]
    return Path(os.path.commonpath([p.resolve() for p in paths]))


def report_dir(paths: list[Path], out: Path | None) -> Path:
    """Where the report goes: ``--out`` (created if missing) or next to the runs."""
    out_dir = out or default_out_dir(paths)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out {out_dir} is a file; pass a directory (it is made if missing).")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot make the report directory {out_dir}: {exc.strerror}.") from exc
    return out_dir


def run_names(paths: list[Path], out_dir: Path) -> list[str]:
    """Each run's path relative to the report (else to the runs' closest common directory).

    Two sweeps compared together then show ``a/0`` and ``b/0``, not ``0`` twice; the
    absolute paths only if relative ones would still clash.
    """
    resolved = [p.resolve() for p in paths]
    base = out_dir.resolve()
    if not all(p != base and p.is_relative_to(base) for p in resolved):
        base = Path(os.path.commonpath([p.parent for p in resolved]))
    names = [p.relative_to(base).as_posix() for p in resolved]
    return names if len(set(names)) == len(names) else [str(p) for p in resolved]


def read_runs(paths: list[Path], out_dir: Path) -> list[dict[str, Any]]:
    """Every run under ``paths``, named by :func:`run_names`, with its TensorBoard curves."""
    run_dirs = find_runs(paths)
    runs = [read_run(path) for path in run_dirs]
    for run, name in zip(runs, run_names(run_dirs, out_dir), strict=True):
        run["run"] = name
        run["curves"] = read_curves(run["path"]) if run["status"] != "unreadable" else {}
        walls = [wall for points in run["curves"].values() for _, wall, _ in points]
        run["start"] = min(walls, default=0.0)
    return runs


def compare(paths: list[Path], out_dir: Path | None = None, verbose: bool = True) -> dict[str, Any]:
    """Write the report for the runs under ``paths``; returns its rows, plots and lines drawn.

    ``verbose``: print the grouped table and the runs without numbers or curves.
    """
    out_dir = report_dir(paths, out_dir)
    runs = read_runs(paths, out_dir)
    keys = group_keys(runs)
    rows = run_rows(runs)
    groups = group_rows(runs, keys)
    header, body = display_groups(groups, keys)
    markdown = "## Runs\n\n" + markdown_table(RUN_COLUMNS, rows)
    markdown += "\n## Over seeds, by backend (mean ± std)\n\n"
    shown = [dict(zip(header, line, strict=True)) for line in body]
    markdown += markdown_table(tuple(header), shown)
    read_at = table_minutes(runs)
    minutes = minutes_table(runs, read_at)
    columns = minute_columns(read_at)
    markdown += "\n## Val loss by wall-clock time, by cell (mean over runs)\n\n"
    markdown += markdown_table(columns, minutes)
    markdown += "\n## Where the lines cross\n\n" + crossings_markdown(runs, minutes, read_at)
    write_text_atomically(out_dir / "comparison.md", markdown)
    write_text_atomically(out_dir / "comparison.csv", csv_text(RUN_COLUMNS, rows))
    write_text_atomically(out_dir / "comparison_groups.csv", csv_text(group_columns(keys), groups))
    write_text_atomically(out_dir / "comparison_minutes.csv", csv_text(columns, minutes))
    drawn = plot_curves(runs, out_dir) | plot_mixers(runs, out_dir)
    plots = list(drawn)
    if groups:
        plots.append(plot_tokens_per_sec(groups, keys, out_dir))
    if verbose:
        print_report(rows, header, body)
        print_without_curves(runs)
    lines = {path.stem: n for path, n in drawn.items()}
    return {
        "runs": rows,
        "groups": groups,
        "minutes": minutes,
        "plots": plots,
        "lines": lines,
        "out_dir": out_dir,
    }


def print_without_curves(runs: list[dict[str, Any]]) -> None:
    """One line naming the runs missing from the plots: no TensorBoard scalars to draw."""
    missing = [r["run"] for r in runs if r["status"] != "unreadable" and not r["curves"]]
    if missing:
        rich.get_console().print(
            f"[yellow]no TensorBoard scalars (logger=csv?), so not in the plots: "
            f"{', '.join(missing)}[/yellow]",
            soft_wrap=True,
        )


def print_report(rows: list[dict[str, Any]], header: list[str], body: list[list[str]]) -> None:
    """The grouped table in the terminal, and every run that has no numbers yet."""
    table = rich.table.Table(title="custom vs builtin, over seeds (mean ± std)")
    shown = [i for i, column in enumerate(header) if not column.startswith("best_val_ppl")]
    for i in shown:
        table.add_column(header[i].replace(" ", "\n"), justify="right")
    for line in body:
        table.add_row(*(line[i] for i in shown))
    console = rich.console.Console()
    if not console.is_terminal:  # a log file or a pipe: as wide as the table needs
        wide = console.options.update_width(1000)
        console = rich.console.Console(width=console.measure(table, options=wide).maximum)
    console.print(table)
    for row in rows:
        if row["status"] != "done":
            error = f": {row['error']}" if row.get("error") else ""
            message = f"[yellow]run {row['run']} is {row['status']}{error}[/yellow]"
            rich.get_console().print(message, soft_wrap=True)
