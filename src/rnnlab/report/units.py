"""What a trained model's units track: features of a text, correlations, the page and the picture.

``rnnlab-inspect`` hands this module plain numbers (the text's pieces, one per token,
the chosen layer's activations, the per-token loss and each position's top-5 next
tokens), so the report layer never sees the model. The features are the simple ones of
Karpathy, Johnson and Fei-Fei (2015): position in the line, inside quotes, inside
brackets, indentation depth. The page is self-contained HTML without JavaScript: each
token a ``<span>`` coloured by a unit's activation, its ``title`` (shown on hover) the
activation, the token's loss and the model's top-5 next tokens.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from rnnlab.atomic import write_text_atomically
from rnnlab.report.plots import save_png

OPENING, CLOSING = "([{", ")]}"


def text_features(pieces: Sequence[str]) -> dict[str, np.ndarray]:
    """Each feature's value at every token, from the text alone: ``name -> (T,)``."""
    rows = []  # each token's (position, inside quotes, bracket depth, indentation)
    column = bracket = indentation = 0
    in_quotes, line_start = False, True
    for piece in pieces:
        rows.append((column, in_quotes, bracket, indentation))
        for char in piece:
            if char == "\n":
                column, indentation, line_start = 0, 0, True
                continue
            column += 1
            if line_start and char in " \t":
                indentation += 1
            else:
                line_start = False
            in_quotes ^= char == '"'
            bracket += (char in OPENING) - (char in CLOSING and bracket > 0)
    names = ("position in line", "inside quotes", "bracket depth", "indentation")
    values = np.asarray(rows, dtype=float).reshape(len(rows), len(names))
    return {name: values[:, i] for i, name in enumerate(names)}


def correlations(acts: np.ndarray, feature: np.ndarray) -> np.ndarray:
    """Pearson correlation of every unit ``acts (T, H)`` with ``feature (T,)``; 0 where either
    is constant."""
    a, f = acts - acts.mean(0), feature - feature.mean()
    scale = np.sqrt((a**2).sum(0) * (f**2).sum())
    return np.divide(a.T @ f, scale, out=np.zeros(acts.shape[1]), where=scale > 0)


def pick_units(
    acts: np.ndarray, features: dict[str, np.ndarray], units: Sequence[int] | None
) -> list[tuple[int, str, float]]:
    """``(unit, feature, correlation)``: for the given units, the feature each follows best;
    else, for each feature that varies, the unit that follows it best."""
    table = {name: correlations(acts, values) for name, values in features.items()}
    if units is not None:
        best = [max(table, key=lambda name, u=u: abs(table[name][u])) for u in units]
        return [(u, name, float(table[name][u])) for u, name in zip(units, best, strict=True)]
    return [
        (int(np.abs(r).argmax()), name, float(r[np.abs(r).argmax()]))
        for name, r in table.items()
        if features[name].std() > 0
    ]


def colour(value: float, low: float, high: float) -> str:
    """Blue (low) through white to red (high), as a CSS colour."""
    x = 0.0 if high == low else 2 * (value - low) / (high - low) - 1  # -1 .. 1
    fade = int(255 * (1 - abs(x)))
    return f"rgb(255,{fade},{fade})" if x > 0 else f"rgb({fade},{fade},255)"


def shown_loss(loss: float) -> str:
    """A token's loss in nats, or ``-`` for the first token: nothing before it predicts it."""
    return f"{loss:.3f}" if np.isfinite(loss) else "-"


def tooltip(i: int, activation: float | None, loss: float, top5: list[tuple[str, float]]) -> str:
    shown = " ".join(f"{token!r} {p:.3f}" for token, p in top5)
    parts = [f"#{i}"]
    if activation is not None:
        parts.append(f"a={activation:+.3f}")
    parts += [f"loss={shown_loss(loss)}", f"next: {shown}"]
    return " | ".join(parts)


def coloured_text(
    pieces: Sequence[str],
    values: np.ndarray,
    losses: np.ndarray,
    top5: list[list[tuple[str, float]]],
    show_activation: bool,
) -> str:
    """The text, each token a span coloured by ``values`` (NaN: uncoloured)."""
    finite = values[np.isfinite(values)]
    low, high = (float(finite.min()), float(finite.max())) if len(finite) else (0.0, 0.0)
    spans = []
    for i, piece in enumerate(pieces):
        value = float(values[i])
        style = f"background:{colour(value, low, high)}" if np.isfinite(value) else ""
        title = tooltip(i, value if show_activation else None, float(losses[i]), top5[i])
        spans.append(
            f'<span class="tok" style="{style}" title="{html.escape(title)}">'
            f"{html.escape(piece)}</span>"
        )
    return '<div class="text">' + "".join(spans) + "</div>"


def write_page(
    path: Path,
    title: str,
    pieces: Sequence[str],
    acts: np.ndarray,
    chosen: list[tuple[int, str, float]],
    losses: np.ndarray,
    top5: list[list[tuple[str, float]]],
) -> Path:
    """The HTML page: a coloured text per chosen unit, the loss strip, the top-5 table."""
    blocks = [
        f"<h2>unit {unit}: {html.escape(name)} (r = {r:+.2f})</h2>"
        + coloured_text(pieces, acts[:, unit], losses, top5, True)
        for unit, name, r in chosen
    ]
    blocks.append(
        "<h2>loss of each token (nats; white low, red high)</h2>"
        + coloured_text(pieces, losses, losses, top5, False)
    )
    rows = "".join(
        f"<tr><td>{i}</td><td>{html.escape(repr(piece))}</td><td>{shown_loss(loss)}</td><td>"
        + ", ".join(f"{html.escape(repr(t))} {p:.3f}" for t, p in options)
        + "</td></tr>"
        for i, (piece, loss, options) in enumerate(zip(pieces, losses, top5, strict=True))
    )
    table = (
        "<h2>top-5 next tokens at each position</h2><table><tr><th>#</th><th>token</th>"
        f"<th>loss</th><th>next (probability)</th></tr>{rows}</table>"
    )
    style = (
        "body{font-family:sans-serif;margin:2em}.text{font-family:monospace;white-space:pre-wrap;"
        "line-height:1.6;border:1px solid #ddd;padding:.5em}.tok{padding:0}"
        "td,th{padding:2px 8px;font-family:monospace;text-align:left}"
    )
    page = (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>"
        "<p>Hover a token for its activation, its loss and the model's top-5 next tokens.</p>"
        + "".join(blocks)
        + table
        + "</body></html>\n"
    )
    write_text_atomically(path, page)
    return path


def write_png(
    path: Path, acts: np.ndarray, chosen: list[tuple[int, str, float]], losses: np.ndarray
) -> Path:
    """Each chosen unit's activation over the tokens, and the per-token loss, as heat strips."""
    rows = [acts[:, unit] for unit, _, _ in chosen]
    fig = Figure(figsize=(10, 0.6 * (len(rows) + 1) + 1.2))
    axes = fig.subplots(len(rows) + 1, 1, squeeze=False)[:, 0]
    for ax, row, (unit, name, r) in zip(axes, rows, chosen, strict=False):
        ax.imshow(row[None], aspect="auto", cmap="coolwarm")
        ax.set_yticks([0], [f"unit {unit}: {name} (r={r:+.2f})"])
        ax.set_xticks([])
    axes[-1].imshow(np.nan_to_num(losses)[None], aspect="auto", cmap="Reds")
    axes[-1].set_yticks([0], ["loss"])
    axes[-1].set_xlabel("token")
    return save_png(fig, path)
