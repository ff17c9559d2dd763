"""rnnlab's own entries in a checkpoint, under one key, each owner writing its own.

Lightning's checkpoint holds the weights, the optimizer and the loop's counters. What an
exact resume needs besides (the state carried between windows and the losses so far:
the module; tokens and seconds: the throughput counter; the RNG states: the random-state
callback) sits under :data:`STATE_KEY`, so that none of it collides with Lightning's keys.
"""

from __future__ import annotations

from typing import Any

#: the checkpoint entry holding rnnlab's own state: the carried hidden state, losses, counters, RNGs
STATE_KEY = "rnnlab"


def run_state(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """rnnlab's entries of a checkpoint (made empty if it has none yet)."""
    return checkpoint.setdefault(STATE_KEY, {})
