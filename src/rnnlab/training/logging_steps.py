"""Which training steps log: the only ones that may wait for the device.

A scalar logged is a host sync on a GPU and, in Lightning, about 1 ms of bookkeeping
on CPU, so the module and the callbacks log, and read device flags, only at the steps
Lightning writes logs at (``trainer.log_every_n_steps``).
"""

from __future__ import annotations

import lightning as L


def is_logging_step(trainer: L.Trainer) -> bool:
    """Whether the step that is running is one Lightning logs at.

    Ask before its optimizer update (batch start, ``training_step``, before backward):
    the update advances ``global_step``.
    """
    return (trainer.global_step + 1) % trainer.log_every_n_steps == 0
