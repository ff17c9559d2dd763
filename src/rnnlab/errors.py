"""User mistakes: one clear sentence and a non-zero exit, never a stack trace.

Code anywhere in rnnlab raises :class:`UserError` for input a user can fix (a bad
path, an impossible size); the checks below phrase the usual ones alike. The entry
points (:mod:`rnnlab.cli.app`) print that sentence and exit with status 1. Anything
else is a bug and keeps its traceback. This module imports nothing, so every layer,
the copyable :mod:`rnnlab.nn` included, can raise it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, TypeVar

T = TypeVar("T")


class UserError(ValueError):
    """A mistake in the user's input; its message says what is wrong and what to do."""


def check_choice(name: str, value: T, choices: Sequence[T]) -> T:
    """``value`` if it is one of ``choices``, else a sentence listing them."""
    if value not in choices:
        raise UserError(f"unknown {name} {value!r}; use one of: {', '.join(map(str, choices))}.")
    return value


def check_bool(name: str, value: Any) -> bool:
    """``value`` if it is true or false (a YAML ``yes`` or ``1`` is not)."""
    if not isinstance(value, bool):
        raise UserError(f"{name} must be true or false, got {value!r}.")
    return value


def check_int(name: str, value: Any, minimum: int) -> int:
    """``value`` if it is a whole number of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserError(f"{name} must be a whole number, got {value!r}.")
    if value < minimum:
        raise UserError(f"{name} must be at least {minimum}, got {value}.")
    return value


def check_number(
    name: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    *,
    open_low: bool = False,
    open_high: bool = False,
) -> float:
    """``value`` if it is a number within the bounds given (``open_*``: the bound excluded)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise UserError(f"{name} must be a number, got {value!r}.")
    too_low = low is not None and (value <= low if open_low else value < low)
    too_high = high is not None and (value >= high if open_high else value > high)
    if too_low or too_high:
        raise UserError(f"{name} must be {_bounds(low, high, open_low, open_high)}, got {value}.")
    return value


def _bounds(low: float | None, high: float | None, open_low: bool, open_high: bool) -> str:
    """``above 0``, ``at most 1``, ``in [0, 1)``: the allowed range in words."""
    if low is not None and high is not None:
        return f"in {'(' if open_low else '['}{low}, {high}{')' if open_high else ']'}"
    if low is not None:
        return f"{'above' if open_low else 'at least'} {low}"
    return f"{'below' if open_high else 'at most'} {high}"
