"""How much memory training takes: the resident set's peak from the start of training.

A process's lifetime peak (``ru_maxrss``) will not do: under the joblib launcher one worker
process runs several jobs in turn, and its peak would carry from one run into the next.
Linux lets a process reset its peak mark (``5`` written to ``/proc/self/clear_refs``), so
each run measures its own, from the resident set it starts training with (torch, the data,
the model) to the most it held while training. Elsewhere the figures are ``None``.
"""

from __future__ import annotations

from pathlib import Path

STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")


def reset_peak_memory() -> float | None:
    """Start the peak mark again at the current resident set; returns that, in MB."""
    try:
        CLEAR_REFS.write_text("5")
    except OSError:
        return None
    return status_mb("VmRSS")


def peak_memory_mb() -> float | None:
    """The most resident memory since :func:`reset_peak_memory` (or since the start), in MB."""
    return status_mb("VmHWM")


def status_mb(field: str) -> float | None:
    """A ``kB`` field of ``/proc/self/status``, in MB; None where there is no such file."""
    try:
        lines = STATUS.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith(f"{field}:"):
            return round(int(line.split()[1]) / 1024, 1)
    return None
