"""The mixers side by side, as the equal-budget comparison reads them: val loss against
wall-clock time and against tokens seen, one line per cell (the mean over its seeds, with
a band from the lowest to the highest), each cell's val loss at fixed minutes beside
its parameters, training tokens per second and peak memory, which cell leads at each of
those minutes, and where two cells' lines cross, by time and by tokens.

Drawn from the TensorBoard curves every run writes (``val/loss`` at each validation): the
time is the event's wall clock since the run's first event, the tokens are the step times
``data.batch_size * data.seq_len`` (what one optimiser step of one process reads). Between
two validations a run's val loss is the last one measured: nothing is interpolated, so a
line and the table say what was known at that time; after a run's last validation it says
nothing (the table leaves it out of the minutes it did not reach). A run with a time budget
(``trainer.max_time``) is stopped by it, and the validation after the stop scores the
weights of the whole budget: it is read at the budget's end, not the seconds it took.
"""

from __future__ import annotations

import bisect
import math
import statistics
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from rnnlab.report.plots import CELL_COLOURS, cell_colour, cell_of, save_png

#: the minutes at which the table reads each cell's val loss (the equal-budget comparison's
#: 29 minutes and before), then every :data:`LATER` minutes that the longest run reached
MINUTES = (5, 10, 20, 29)
LATER = 30
#: (name, x axis, label): the plots, one line per cell
MIXER_PLOTS = (
    ("val_loss_by_time_per_cell", "seconds", "wall-clock minutes"),
    ("val_loss_by_tokens_per_cell", "tokens", "tokens seen (millions)"),
)

#: metrics.json's figures of what a run costs, and their columns in the minutes table
COST_COLUMNS = {"num_params": "params", "tokens_per_sec": "tokens/s", "peak_rss_mb": "peak MB"}

Curve = list[tuple[float, float]]


def budget_seconds(run: dict[str, Any]) -> float:
    """``trainer.max_time`` (DD:HH:MM:SS, as the config check holds it) in seconds; no
    budget is an endless one."""
    text = run["settings"].get("trainer.max_time")
    if not text:
        return math.inf
    days, hours, minutes, seconds = (int(part) for part in str(text).split(":"))
    return float(((days * 24 + hours) * 60 + minutes) * 60 + seconds)


def val_curve(run: dict[str, Any], x_axis: str) -> Curve:
    """``(x, val loss)`` at each validation of ``run``: x in seconds since its start (at
    most its time budget), or in tokens seen."""
    points = run["curves"].get("val/loss", [])
    if x_axis == "seconds":
        budget = budget_seconds(run)
        return [(min(wall - run["start"], budget), value) for _, wall, value in points]
    settings = run["settings"]
    per_step = (settings.get("data.batch_size") or 0) * (settings.get("data.seq_len") or 0)
    return [(float(step * per_step), value) for step, _, value in points]


def known_at(curve: Curve, x: float) -> float | None:
    """The last value measured at or before ``x`` (``None`` before the first)."""
    index = bisect.bisect_right([px for px, _ in curve], x)
    return curve[index - 1][1] if index else None


def per_cell(runs: list[dict[str, Any]], x_axis: str) -> dict[str, list[Curve]]:
    """Each cell's curves, one per run that validated at least once, cells in plot order."""
    curves: dict[str, list[Curve]] = {}
    for run in runs:
        curve = val_curve(run, x_axis)
        if curve:
            curves.setdefault(cell_of(run), []).append(curve)
    order = [c for c in CELL_COLOURS if c in curves] + sorted(set(curves) - set(CELL_COLOURS))
    return {cell: curves[cell] for cell in order}


def band(curves: list[Curve]) -> tuple[list[float], list[float], list[float], list[float]]:
    """``(x, mean, low, high)`` over the curves, at every x where each has a value."""
    start = max(curve[0][0] for curve in curves)
    xs = sorted({x for curve in curves for x, _ in curve if x >= start})
    values = [[known_at(curve, x) or 0.0 for curve in curves] for x in xs]  # all known here
    return (
        xs,
        [statistics.fmean(v) for v in values],
        [min(v) for v in values],
        [max(v) for v in values],
    )


def plot_mixers(runs: list[dict[str, Any]], out_dir: Path) -> dict[Path, int]:
    """The two plots of :data:`MIXER_PLOTS`, each PNG with the number of cells drawn."""
    drawn = {}
    for name, x_axis, label in MIXER_PLOTS:
        fig = Figure(figsize=(7, 4.5))
        ax = fig.subplots()
        cells = per_cell(runs, x_axis)
        scale = 60.0 if x_axis == "seconds" else 1e6
        for cell, curves in cells.items():
            xs, mean, low, high = band(curves)
            xs = [x / scale for x in xs]
            colour = cell_colour(cell)
            ax.step(xs, mean, where="post", color=colour, lw=1.4, label=f"{cell} ({len(curves)})")
            if len(curves) > 1:
                ax.fill_between(xs, low, high, step="post", color=colour, alpha=0.2, lw=0)
        if cells:
            ax.legend(title="cell (runs)")
        ax.set_xlabel(label)
        ax.set_ylabel("val loss (nats/token)")
        ax.grid(alpha=0.3)
        drawn[save_png(fig, out_dir / f"{name}.png")] = len(cells)
    return drawn


def table_minutes(runs: list[dict[str, Any]]) -> list[int]:
    """:data:`MINUTES`, then 60, 90, ... up to the longest run's last validation (a run of
    two hours is read at each half hour, where the lines may cross), and the minute each
    run's time budget ends (the word leg's 44), in order."""
    last = max((c[-1][0] for cs in per_cell(runs, "seconds").values() for c in cs), default=0)
    ends = {int(end // 60) for run in runs if math.isfinite(end := budget_seconds(run))}
    return sorted({*MINUTES, *range(2 * LATER, int(last // 60) + 1, LATER), *ends})


def minute_columns(minutes: list[int]) -> tuple[str, ...]:
    """The minutes table's columns."""
    return ("cell", "runs", *(f"val at {m} min" for m in minutes), *COST_COLUMNS.values())


def minutes_table(runs: list[dict[str, Any]], minutes: list[int]) -> list[dict[str, Any]]:
    """One row per cell: its runs, the mean val loss known at each of ``minutes`` (those of
    :func:`table_minutes`) over the runs that had validated by then and ran that long (blank
    where none had: a 29-minute run says nothing of minute 60 beside a two-hour one), and
    what the finished runs cost: their mean parameters, training tokens per second and
    peak resident MB."""
    rows = []
    for cell, curves in per_cell(runs, "seconds").items():
        row: dict[str, Any] = {"cell": cell, "runs": len(curves)}
        for minute in minutes:
            reached = [c for c in curves if c[-1][0] >= 60.0 * minute]
            known = [v for c in reached if (v := known_at(c, 60.0 * minute)) is not None]
            row[f"val at {minute} min"] = statistics.fmean(known) if known else None
        finished = [r["metrics"] for r in runs if cell_of(r) == cell and r.get("metrics")]
        for key, column in COST_COLUMNS.items():
            values = [m[key] for m in finished if math.isfinite(m.get(key) or math.nan)]
            row[column] = round(statistics.fmean(values)) if values else None
        rows.append(row)
    return rows


def crossings(runs: list[dict[str, Any]], x_axis: str) -> list[dict[str, Any]]:
    """Where two cells' mean lines cross: for each pair, each x (seconds or tokens) at which
    the one behind before is ahead from then on, ordered by x. Both lines are read as the
    plots draw them (the last value known), at every x where both have one."""
    means = {cell: band(curves)[:2] for cell, curves in per_cell(runs, x_axis).items()}
    found = []
    cells = list(means)
    for i, first in enumerate(cells):
        for second in cells[i + 1 :]:
            a, b = list(zip(*means[first], strict=True)), list(zip(*means[second], strict=True))
            start = max(a[0][0], b[0][0])
            xs = sorted({x for x, _ in a + b if x >= start})
            ahead = None
            for x in xs:
                gap = (known_at(a, x) or 0.0) - (known_at(b, x) or 0.0)
                now = first if gap < 0 else second if gap > 0 else ahead
                if ahead is not None and now != ahead:
                    behind = second if now == first else first
                    found.append({x_axis: x, "ahead": now, "behind": behind})
                ahead = now
    return sorted(found, key=lambda row: row[x_axis])


def leaders(rows: list[dict[str, Any]], minutes: list[int]) -> dict[int, str]:
    """The cell with the lowest val loss at each of ``minutes`` in :func:`minutes_table`'s
    rows (a minute no cell had reached is left out)."""
    ahead = {}
    for minute in minutes:
        known = [(row[f"val at {minute} min"], row["cell"]) for row in rows]
        known = [pair for pair in known if pair[0] is not None]
        if known:
            ahead[minute] = min(known)[1]
    return ahead


def crossings_markdown(
    runs: list[dict[str, Any]], rows: list[dict[str, Any]], minutes: list[int]
) -> str:
    """Who leads at each minute of the table, and where the lines cross, by time and by
    tokens: what the answer to "which mixer, for which budget?" reads."""
    ahead = leaders(rows, minutes)
    lines = ["Ahead: " + ", ".join(f"{cell} at {m} min" for m, cell in ahead.items())]
    for x_axis, unit, scale in (("seconds", "minutes", 60.0), ("tokens", "M tokens", 1e6)):
        crossed = crossings(runs, x_axis)
        if not crossed:
            lines += ["", f"By {x_axis}: no lines cross."]
            continue
        lines += [
            "",
            f"By {x_axis}:",
            "",
            f"| {unit} | ahead from then | behind |",
            "|---|---|---|",
        ]
        lines += [
            f"| {row[x_axis] / scale:.1f} | {row['ahead']} | {row['behind']} |" for row in crossed
        ]
    return "\n".join(lines) + "\n"
