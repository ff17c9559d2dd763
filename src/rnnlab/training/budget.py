r"""A learning-rate schedule laid over the run's whole budget, so that a preset spends the
time it is given on any corpus and any machine, and ends with a small learning rate.

With ``p`` the share of the budget spent (0 at the start, 1 when the run must stop) and
``lr_0`` each parameter group's initial rate::

    lr(p) = lr_0 * (floor + (1 - floor) * d(p))      d(p) = 1 - p           (linear)
                                                      d(p) = (1 + cos(pi p)) / 2  (cosine)

The budget is whichever of the Trainer's limits ends the run first: ``max_time`` (the
training wall clock, Lightning's Timer, which a resumed run carries on), ``max_steps``,
or ``max_epochs`` times the batches of an epoch; so an epoch-count preset keeps working.
Decaying linearly to (near) zero over the budget does as well as tuned step schedules
(Li, Yumer and Ramanan, "Budgeted training", ICLR 2020). The schedule steps after every
optimiser step.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Timer

from rnnlab.errors import check_choice, check_number

SHAPES: dict[str, Callable[[float], float]] = {
    "linear": lambda p: 1.0 - p,
    "cosine": lambda p: 0.5 * (1.0 + math.cos(math.pi * p)),
}


def budget_spent(trainer: L.Trainer) -> float:
    """The share of the run's budget spent, in [0, 1]: the largest among the limits set."""
    shares = []
    timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)
    if timer is not None and timer.time_remaining() is not None:
        elapsed = timer.time_elapsed()
        shares.append(elapsed / (elapsed + max(timer.time_remaining(), 0.0)))
    if trainer.max_steps is not None and trainer.max_steps > 0:
        shares.append(trainer.global_step / trainer.max_steps)
    batches = trainer.num_training_batches
    if trainer.max_epochs is not None and trainer.max_epochs > 0 and math.isfinite(batches):
        steps_per_epoch = max(1, int(batches) // trainer.accumulate_grad_batches)
        shares.append(trainer.global_step / (trainer.max_epochs * steps_per_epoch))
    return min(1.0, max(shares, default=0.0))


def check_options(shape: str, floor: float) -> None:
    """The schedule's options, in one sentence each (before the run builds anything)."""
    check_choice("model.scheduler.shape", shape, tuple(SHAPES))
    check_number("model.scheduler.floor", floor, 0, 1)


class BudgetDecay(torch.optim.lr_scheduler.LRScheduler):
    """``lr(p)`` of the module docstring, ``p`` read from ``progress`` at every step.

    ``progress`` is set by whoever knows the budget (:class:`RNNLMModule` passes
    :func:`budget_spent` of its Trainer); until then ``p = 0``. It is no part of the
    state saved in checkpoints: a resumed run reads its budget afresh.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        shape: str = "linear",
        floor: float = 0.01,
        progress: Callable[[], float] | None = None,
        last_epoch: int = -1,
    ) -> None:
        check_options(shape, floor)
        self.shape, self.floor, self.progress = shape, floor, progress
        super().__init__(optimizer, last_epoch)

    def factor(self, spent: float) -> float:
        """``lr(p) / lr_0``."""
        return self.floor + (1.0 - self.floor) * SHAPES[self.shape](spent)

    def get_lr(self) -> list[float]:
        factor = self.factor(self.progress() if self.progress is not None else 0.0)
        return [base * factor for base in self.base_lrs]

    def state_dict(self) -> dict[str, Any]:
        return {k: v for k, v in super().state_dict().items() if k != "progress"}
