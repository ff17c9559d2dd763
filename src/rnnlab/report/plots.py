"""The comparison plots: curves of every run coloured by backend, tokens per second by group.

Files only: matplotlib's ``Figure``, never pyplot, so no display and no global state.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter

from rnnlab.atomic import write_atomically
from rnnlab.nn import BACKENDS
from rnnlab.report.tables import REACH_TAG, cell

COLOURS = {"builtin": "tab:blue", "custom": "tab:orange"}
#: with several cells in one report, a colour per cell (and the backend by line style)
CELL_COLOURS = {
    "rnn": "tab:blue",
    "gru": "tab:green",
    "lstm": "tab:red",
    "mingru": "tab:olive",
    "minlstm": "tab:purple",
    "attention": "tab:cyan",
}
#: custom dashed over builtin solid: where the backends agree, both lines stay visible
STYLES = {"builtin": "-", "custom": "--"}
#: (name, TensorBoard tag, x axis, y label): the curves plotted one line per run
CURVES = (
    ("val_ppl_by_step", "val/ppl", "step", "val perplexity"),
    ("val_ppl_by_time", "val/ppl", "seconds", "val perplexity"),
    ("train_loss_by_step", "train/loss", "step", "train loss (nats/token)"),
)
#: drawn too when a run probed its dynamics (callbacks=dynamics)
REACH_CURVE = ("gradient_reach_by_step", REACH_TAG, "step", "gradient reach, layer 0 (steps)")


def cell_of(run: dict[str, Any]) -> str:
    """A run's cell; runs from before ``model.cell`` existed are Elman RNNs."""
    return run["shown"].get("cell") or "rnn"


def cell_colour(cell: str) -> str:
    return CELL_COLOURS.get(cell, "tab:gray")


def colour(run: dict[str, Any], by_cell: bool) -> str:
    """A run's line colour: its backend's, or its cell's when the report holds several."""
    return cell_colour(cell_of(run)) if by_cell else COLOURS[run["shown"]["backend"]]


def legend(ax: Axes, cells: list[str]) -> None:
    """Backends by line style (and colour, or the cells by colour when there are several)."""
    by_cell = len(cells) > 1
    handles = [
        Line2D([], [], ls=STYLES[b], color="black" if by_cell else COLOURS[b], label=b)
        for b in BACKENDS
    ]
    handles += [Line2D([], [], color=cell_colour(c), label=c) for c in cells if by_cell]
    ax.legend(handles=handles, title="cell, backend" if by_cell else "backend")


def plot_curves(runs: list[dict[str, Any]], out_dir: Path) -> dict[Path, int]:
    """One PNG per entry of :data:`CURVES` (and :data:`REACH_CURVE` when a run has it), a
    line per run: backends by line style, cells by colour when there are several (else the
    backends by colour too).

    Returns each PNG with the number of lines drawn on it: runs without TensorBoard
    scalars (``logger=csv``) draw none, and a plot without lines is still a valid image.
    """
    present = {cell_of(r) for r in runs if r["status"] != "unreadable"}
    cells = [c for c in CELL_COLOURS if c in present] + sorted(present - set(CELL_COLOURS))
    probed = any(REACH_TAG in run.get("curves", {}) for run in runs)
    drawn = {}
    for name, tag, x_axis, label in (*CURVES, REACH_CURVE) if probed else CURVES:
        fig = Figure(figsize=(7, 4.5))
        ax = fig.subplots()
        lines = sum(plot_run(ax, run, tag, x_axis, len(cells) > 1) for run in runs)
        legend(ax, cells)
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


def plot_run(ax: Axes, run: dict[str, Any], tag: str, x_axis: str, by_cell: bool) -> bool:
    """One run's line of ``tag`` on ``ax``; False if it has no such scalars or no backend."""
    points = run["curves"].get(tag, [])
    backend = run["shown"].get("backend")
    if not points or backend not in BACKENDS:
        return False
    xs = [step if x_axis == "step" else wall - run["start"] for step, wall, _ in points]
    line_colour = colour(run, by_cell)
    ax.plot(xs, [v for *_, v in points], STYLES[backend], color=line_colour, lw=1.2)
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
