"""``rnnlab-compare <sweep dir | run dirs...>``: one report of many runs, custom against builtin.

Reads each run's metrics.json and config.yaml (:mod:`rnnlab.runs`) and its
TensorBoard event files (tensorboard's own ``EventAccumulator``), and writes next
to them:

- ``comparison.md`` / ``comparison.csv``: one row per run, then
  ``comparison_groups.csv``: runs that differ only in seed and backend grouped, mean
  and standard deviation over seeds per backend, and the custom / builtin ratios of
  tokens per second and of final val ppl;
- PNG plots: val ppl against step and against wall-clock time, train loss against
  step (one line per run, coloured by backend), tokens per second by backend.

Runs still going, killed or failed are listed with their status; their missing
numbers are left out of the groups, and their curves are drawn as far as they got.
``experiment=compare_backends`` writes this report when its sweep ends
(:class:`CompareReport`).
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
from pathlib import Path
from typing import Any

import rich
import rich.console
import rich.table
from hydra.experimental.callback import Callback
from matplotlib.figure import Figure  # no pyplot: files only, no display or global state
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter
from omegaconf import DictConfig
from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

from rnnlab.errors import exit_on_user_error
from rnnlab.runs import (
    RUN_COLUMNS,
    cell,
    csv_text,
    find_runs,
    markdown_table,
    read_run,
    run_row,
    run_rows,
    write_atomically,
)

BACKENDS = ("builtin", "custom")
COLOURS = {"builtin": "tab:blue", "custom": "tab:orange"}
#: custom dashed over builtin solid: where the backends agree, both lines stay visible
STYLES = {"builtin": "-", "custom": "--"}
#: (name, TensorBoard tag, x axis, y label): the curves plotted one line per run
CURVES = (
    ("val_ppl_by_step", "val/ppl", "step", "val perplexity"),
    ("val_ppl_by_time", "val/ppl", "seconds", "val perplexity"),
    ("train_loss_by_step", "train/loss", "step", "train loss (nats/token)"),
)
#: the per-backend numbers of a group: (column, run column)
GROUP_METRICS = (
    ("val_ppl", "val_ppl"),
    ("best_val_ppl", "best_val_ppl"),
    ("tok_s", "tokens_per_sec"),
)


def read_curves(run_dir: Path) -> dict[str, list[tuple[int, float, float]]]:
    """Every scalar a run logged to TensorBoard: tag -> [(step, wall time, value)]."""
    events_dir = run_dir / "tensorboard"
    if not events_dir.is_dir():
        return {}
    logging.getLogger("tensorboard").setLevel(logging.WARNING)  # one INFO line per event file
    accumulator = EventAccumulator(str(events_dir), size_guidance={SCALARS: 0})
    accumulator.Reload()
    return {
        tag: [(e.step, e.wall_time, e.value) for e in accumulator.Scalars(tag)]
        for tag in accumulator.Tags()[SCALARS]
    }


def group_keys(runs: list[dict[str, Any]]) -> list[str]:
    """Hyperparameters that tell groups apart: the usual three, and any other that varies."""
    varying = {
        key
        for key in {k for run in runs for k in run["hparams"]}
        if len({repr(run["hparams"].get(key)) for run in runs}) > 1
    }
    if all(r["hparams"].get("embedding_dim") == r["hparams"].get("hidden_size") for r in runs):
        varying.discard("embedding_dim")  # it follows hidden_size unless set on its own
    keys = ["hidden_size", "seq_len", "lr"]
    return keys + sorted(varying - set(keys) - {"backend", "seed"})


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def group_rows(runs: list[dict[str, Any]], keys: list[str]) -> list[dict[str, Any]]:
    """One row per group of finished runs: mean/std over seeds per backend, custom/builtin."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for run in runs:
        if run["status"] == "done":
            key = tuple(repr(run["hparams"].get(k)) for k in keys)
            groups.setdefault(key, []).append(run)
    rows = []
    for members in groups.values():
        row: dict[str, Any] = {k: members[0]["hparams"].get(k) for k in keys}
        for backend in BACKENDS:
            mine = [run_row(r) for r in members if r["hparams"]["backend"] == backend]
            row[f"{backend}_runs"] = len(mine)
            for name, column in GROUP_METRICS:
                values = [r[column] for r in mine if r.get(column) is not None]
                mean, std = mean_std(values)
                row[f"{name}_{backend}"], row[f"{name}_{backend}_std"] = mean, std
        for name in ("val_ppl", "tok_s"):
            custom, builtin = row[f"{name}_custom"], row[f"{name}_builtin"]
            row[f"{name}_ratio"] = custom / builtin if custom and builtin else None
        rows.append(row)
    return rows


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
    header = [*keys, "seeds builtin/custom"]
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


def plot_curves(runs: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    """One PNG per entry of :data:`CURVES`, a line per run coloured by backend."""
    paths = []
    for name, tag, x_axis, label in CURVES:
        fig = Figure(figsize=(7, 4.5))
        ax = fig.subplots()
        for run in runs:
            points = run["curves"].get(tag, [])
            if not points:
                continue
            start = run["start"]
            xs = [step if x_axis == "step" else wall - start for step, wall, _ in points]
            backend = run["hparams"].get("backend", "builtin")
            ax.plot(xs, [v for *_, v in points], STYLES[backend], color=COLOURS[backend], lw=1.2)
        handles = [Line2D([], [], ls=STYLES[b], color=COLOURS[b], label=b) for b in BACKENDS]
        ax.legend(handles=handles, title="backend")
        ax.set_xlabel("training step" if x_axis == "step" else "wall-clock seconds")
        ax.set_ylabel(label)
        if tag == "val/ppl":
            ax.set_yscale("log")
            plain = FuncFormatter(lambda value, _: f"{value:g}")
            ax.yaxis.set_major_formatter(plain)
            ax.yaxis.set_minor_formatter(plain)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        paths.append(out_dir / f"{name}.png")
        fig.savefig(paths[-1], dpi=110)
    return paths


def plot_tokens_per_sec(groups: list[dict[str, Any]], keys: list[str], out_dir: Path) -> Path:
    """Mean tokens per second of each group, a bar per backend, std as error bars."""
    fig = Figure(figsize=(max(5.0, 1.6 * len(groups) + 2), 4.5))
    ax = fig.subplots()
    width = 0.38
    for i, backend in enumerate(BACKENDS):
        xs = [j + (i - 0.5) * width for j in range(len(groups))]
        means = [g[f"tok_s_{backend}"] or 0.0 for g in groups]
        errors = [g[f"tok_s_{backend}_std"] or 0.0 for g in groups]
        ax.bar(xs, means, width, yerr=errors, capsize=3, label=backend, color=COLOURS[backend])
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(["\n".join(f"{k}={cell(g[k])}" for k in keys) for g in groups], fontsize=8)
    ax.set_ylabel("training tokens per second")
    ax.legend(title="backend")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path = out_dir / "tokens_per_sec.png"
    fig.savefig(path, dpi=110)
    return path


def default_out_dir(paths: list[Path]) -> Path:
    """Next to the runs: the one directory given, or the closest directory holding them all."""
    if len(paths) == 1:
        return paths[0]
    return Path(os.path.commonpath([p.resolve() for p in paths]))


def compare(paths: list[Path], out_dir: Path | None = None) -> dict[str, Any]:
    """Write the report for the runs under ``paths``; returns its rows and file paths."""
    runs = [read_run(path) for path in find_runs(paths)]
    for run in runs:
        run["curves"] = read_curves(run["path"])
        walls = [wall for points in run["curves"].values() for _, wall, _ in points]
        run["start"] = min(walls, default=0.0)
    out_dir = out_dir or default_out_dir(paths)
    out_dir.mkdir(parents=True, exist_ok=True)
    keys = group_keys(runs)
    rows = run_rows(runs)
    groups = group_rows(runs, keys)
    header, body = display_groups(groups, keys)
    markdown = "## Runs\n\n" + markdown_table(RUN_COLUMNS, rows)
    markdown += "\n## Over seeds, by backend (mean ± std)\n\n"
    shown = [dict(zip(header, line, strict=True)) for line in body]
    markdown += markdown_table(tuple(header), shown)
    write_atomically(out_dir / "comparison.md", markdown)
    write_atomically(out_dir / "comparison.csv", csv_text(RUN_COLUMNS, rows))
    write_atomically(out_dir / "comparison_groups.csv", csv_text(group_columns(keys), groups))
    plots = plot_curves(runs, out_dir)
    if groups:
        plots.append(plot_tokens_per_sec(groups, keys, out_dir))
    print_report(rows, header, body)
    return {"runs": rows, "groups": groups, "plots": plots, "out_dir": out_dir}


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
            rich.print(f"[yellow]run {row['run']} is {row['status']}{error}[/yellow]")


class CompareReport(Callback):
    """Hydra callback: the comparison report of a multirun, written when the sweep ends."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if sweep_dir.is_dir() and any(d.is_dir() for d in sweep_dir.iterdir()):
            report = compare([sweep_dir])
            rich.print(f"comparison report in {report['out_dir']}")


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="rnnlab-compare",
        description="Compare rnnlab runs: tables (md, csv) and plots (png) of a sweep or runs.",
    )
    parser.add_argument("paths", nargs="+", type=Path, help="a sweep directory or run directories")
    parser.add_argument(
        "--out", type=Path, default=None, help="where to write (default: next to the runs)"
    )
    args = parser.parse_args(argv)
    report = compare(args.paths, args.out)
    finished = sum(row["status"] == "done" for row in report["runs"])
    rich.print(
        f"{len(report['runs'])} runs ({finished} finished): comparison.md, comparison.csv, "
        f"comparison_groups.csv and {len(report['plots'])} plots in {report['out_dir']}"
    )


if __name__ == "__main__":
    main()
