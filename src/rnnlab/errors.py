"""User mistakes: one clear sentence and a non-zero exit, never a stack trace.

Code anywhere in rnnlab raises :class:`UserError` for input a user can fix (a bad
path, an impossible size). The Hydra entry points wrap their task function in
:func:`exit_on_user_error`, which prints that sentence and exits with status 1.
Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

F = TypeVar("F", bound=Callable[..., Any])


class UserError(ValueError):
    """A mistake in the user's input; its message says what is wrong and what to do."""


def find_user_error(exc: BaseException) -> UserError | None:
    """The UserError behind ``exc``, if any (Hydra's instantiate wraps exceptions)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, UserError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def in_multirun() -> bool:
    """Whether this Hydra job is one of a sweep's (where one bad job must not end the rest)."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def exit_on_user_error(fn: F) -> F:
    """Run ``fn``; turn a UserError (however wrapped) into one line on stderr and exit 1.

    In a sweep the job instead writes the sentence to its ``error.txt`` (for the
    sweep summary) and returns ``inf``, the worst value a sweeper can see, and the
    sweep goes on.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            user_error = find_user_error(exc)
            if user_error is None:
                raise
            print(f"error: {user_error}", file=sys.stderr)
            if in_multirun():
                job_dir = Path(HydraConfig.get().runtime.output_dir)
                (job_dir / "error.txt").write_text(f"{user_error}\n")
                return math.inf
            sys.exit(1)

    return wrapper  # type: ignore[return-value]
