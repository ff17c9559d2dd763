"""``rnnlab-compare <sweep dir | run dirs...>``: one report of many runs, custom against builtin.

Reads each run's metrics.json and config.yaml (:mod:`rnnlab.runs`) and its
TensorBoard event files (tensorboard's own ``EventAccumulator``), and writes next
to them:

- ``comparison.md`` / ``comparison.csv``: one row per run, then
  ``comparison_groups.csv``: runs whose resolved configs differ only in seed and
  backend (and where their files go) grouped, mean and standard deviation over seeds
  per backend, and the custom / builtin ratios of tokens per second and of final val ppl;
- PNG plots: val ppl against step and against wall-clock time, train loss against
  step (one line per run, coloured by backend), tokens per second by backend.

Runs still going, killed, failed or unreadable are listed with their status; their
missing numbers are left out of the groups, and their curves are drawn as far as they
got. A NaN or infinite number (a diverged run) is listed but left out of the means.
``experiment=compare_backends`` rewrites this report after every job and when its
sweep ends (:class:`CompareReport`).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import statistics
from pathlib import Path
from typing import Any

import rich
import rich.console
import rich.table
from hydra.core.utils import JobReturn
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from matplotlib.axes import Axes
from matplotlib.figure import Figure  # no pyplot: files only, no display or global state
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter
from omegaconf import DictConfig
from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

from rnnlab.atomic import write_atomically, write_text_atomically
from rnnlab.errors import UserError, exit_on_user_error
from rnnlab.runs import (
    RUN_COLUMNS,
    cell,
    csv_text,
    find_runs,
    holds_runs,
    markdown_table,
    read_run,
    run_row,
    run_rows,
)
from rnnlab.sweep import record_failure

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
#: the columns every group shows (run_hparams names) and the config settings they stand for
SHOWN = {"hidden_size": "model.hidden_size", "seq_len": "data.seq_len", "lr": "model.optimizer.lr"}
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
    """Columns that tell groups apart: the usual three, and every other setting that varies.

    Settings are the dotted keys of each finished run's resolved config
    (:func:`rnnlab.runs.run_settings`), so runs trained for a different number of epochs
    or on other data are never pooled, and the table says by which key they differ.
    """
    done = [run for run in runs if run["status"] == "done"]
    varying = [
        key
        for key in setting_names(done)
        if len({repr(run["settings"].get(key)) for run in done}) > 1
    ]
    return [*SHOWN, *(k for k in varying if k not in SHOWN and k not in SHOWN.values())]


def setting_names(runs: list[dict[str, Any]]) -> list[str]:
    """Every setting any of ``runs`` has (one missing elsewhere counts as differing)."""
    return sorted({key for run in runs for key in run["settings"]})


def group_value(run: dict[str, Any], key: str) -> Any:
    """A group column of a run: one of :data:`SHOWN` by its short name, else a setting."""
    return run["hparams"].get(key) if key in SHOWN else run["settings"].get(key)


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
        mine = [run_row(r) for r in members if r["hparams"].get("backend") == backend]
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


def plot_curves(runs: list[dict[str, Any]], out_dir: Path) -> dict[Path, int]:
    """One PNG per entry of :data:`CURVES`, a line per run coloured by backend.

    Returns each PNG with the number of lines drawn on it: runs without TensorBoard
    scalars (``logger=csv``) draw none, and a plot without lines is still a valid image.
    """
    drawn = {}
    for name, tag, x_axis, label in CURVES:
        fig = Figure(figsize=(7, 4.5))
        ax = fig.subplots()
        lines = sum(plot_run(ax, run, tag, x_axis) for run in runs)
        handles = [Line2D([], [], ls=STYLES[b], color=COLOURS[b], label=b) for b in BACKENDS]
        ax.legend(handles=handles, title="backend")
        ax.set_xlabel("training step" if x_axis == "step" else "wall-clock seconds")
        ax.set_ylabel(label)
        if tag == "val/ppl" and lines:
            ax.set_yscale("log")
            plain = FuncFormatter(lambda value, _: f"{value:g}")
            ax.yaxis.set_major_formatter(plain)
            ax.yaxis.set_minor_formatter(plain)
        ax.grid(alpha=0.3)
        drawn[save_png(fig, out_dir / f"{name}.png")] = lines
    return drawn


def plot_run(ax: Axes, run: dict[str, Any], tag: str, x_axis: str) -> bool:
    """One run's line of ``tag`` on ``ax``; False if it has no such scalars or no backend."""
    points = run["curves"].get(tag, [])
    backend = run["hparams"].get("backend")
    if not points or backend not in BACKENDS:
        return False
    xs = [step if x_axis == "step" else wall - run["start"] for step, wall, _ in points]
    ax.plot(xs, [v for *_, v in points], STYLES[backend], color=COLOURS[backend], lw=1.2)
    return True


def save_png(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    write_atomically(path, lambda file: fig.savefig(file, format="png", dpi=110))
    return path


def bar_heights(groups: list[dict[str, Any]], backend: str) -> tuple[list[float], list[float]]:
    """Mean tokens/s of each group and its std; NaN (no bar, not a zero one) without a run."""
    means = [g[f"tok_s_{backend}"] for g in groups]
    stds = [g[f"tok_s_{backend}_std"] for g in groups]
    return [math.nan if m is None else m for m in means], [s or 0.0 for s in stds]


def plot_tokens_per_sec(groups: list[dict[str, Any]], keys: list[str], out_dir: Path) -> Path:
    """Mean tokens per second of each group, a bar per backend, std as error bars."""
    fig = Figure(figsize=(max(5.0, 1.6 * len(groups) + 2), 4.5))
    ax = fig.subplots()
    width = 0.38
    for i, backend in enumerate(BACKENDS):
        xs = [j + (i - 0.5) * width for j in range(len(groups))]
        means, errors = bar_heights(groups, backend)
        ax.bar(xs, means, width, yerr=errors, capsize=3, label=backend, color=COLOURS[backend])
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(["\n".join(f"{k}={cell(g[k])}" for k in keys) for g in groups], fontsize=8)
    ax.set_ylabel("training tokens per second")
    ax.legend(title="backend")
    ax.grid(axis="y", alpha=0.3)
    return save_png(fig, out_dir / "tokens_per_sec.png")


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
    write_text_atomically(out_dir / "comparison.md", markdown)
    write_text_atomically(out_dir / "comparison.csv", csv_text(RUN_COLUMNS, rows))
    write_text_atomically(out_dir / "comparison_groups.csv", csv_text(group_columns(keys), groups))
    drawn = plot_curves(runs, out_dir)
    plots = list(drawn)
    if groups:
        plots.append(plot_tokens_per_sec(groups, keys, out_dir))
    if verbose:
        print_report(rows, header, body)
        print_without_curves(runs)
    lines = {path.stem: n for path, n in drawn.items()}
    return {"runs": rows, "groups": groups, "plots": plots, "lines": lines, "out_dir": out_dir}


def print_without_curves(runs: list[dict[str, Any]]) -> None:
    """One line naming the runs missing from the plots: no TensorBoard scalars to draw."""
    missing = [r["run"] for r in runs if r["status"] != "unreadable" and not r["curves"]]
    if missing:
        rich.print(
            f"[yellow]no TensorBoard scalars (logger=csv?), so not in the plots: "
            f"{', '.join(missing)}[/yellow]"
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
            rich.print(f"[yellow]run {row['run']} is {row['status']}{error}[/yellow]")


class CompareReport(Callback):
    """Hydra callback: the comparison report of a multirun, after every job and at the end.

    After every job too, because Hydra's basic sweeper re-raises a crashed job's
    exception before ``on_multirun_end``: the report of the jobs that did run must
    not depend on the last one.
    """

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if config.hydra.mode != RunMode.MULTIRUN:
            return
        # Hydra calls end hooks last-registered first: SweepSummary has not recorded it yet
        record_failure(config, job_return)
        write_report(Path(config.hydra.sweep.dir), verbose=False)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        write_report(Path(config.hydra.sweep.dir), verbose=True)


def write_report(sweep_dir: Path, verbose: bool) -> None:
    """The report of a sweep's runs; failing to write it is a warning, never the job's failure."""
    if not holds_runs(sweep_dir):
        return
    try:
        report = compare([sweep_dir], verbose=verbose)
    except Exception as exc:  # a job's result must not hang on its report (a full disk, a bug)
        rich.print(f"[yellow]comparison report not written: {type(exc).__name__}: {exc}[/yellow]")
        return
    if verbose:
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
