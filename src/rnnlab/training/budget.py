r"""A learning-rate schedule laid over the run's whole budget, so that a preset spends the
time it is given on any corpus and any machine, and ends with a small learning rate.

With ``p`` the share of the budget spent (0 at the start, 1 when the run must stop),
``lr_0`` each parameter group's initial rate and ``hold`` the share spent at ``lr_0``
before the decay starts::

    lr(p) = lr_0 * (floor + (1 - floor) * d(q))      d(q) = 1 - q           (linear)
    q = max(0, (p - hold) / (1 - hold))               d(q) = (1 + cos(pi q)) / 2  (cosine)

The budget is whichever of the Trainer's limits ends the run first: ``max_time`` (the
training wall clock, Lightning's Timer, which a resumed run carries on), ``max_steps``,
or ``max_epochs`` times the batches of an epoch; so an epoch-count preset keeps working.
Decaying linearly to (near) zero over the budget does as well as tuned step schedules
(Li, Yumer and Ramanan, "Budgeted training", ICLR 2020). Holding the first rate for part
of the budget and decaying only in the rest ("warmup-stable-decay"; Hägele et al.,
"Scaling laws and compute-optimal training beyond fixed training durations", NeurIPS
2024) suits runs of a few thousand steps, where decaying from the first step slows the
descent while the loss still falls fast at ``lr_0``. The schedule steps after every
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


def check_options(shape: str = "linear", floor: float = 0.01, hold: float = 0.0) -> None:
    """The schedule's options, in one sentence each (before the run builds anything)."""
    check_choice("model.scheduler.shape", shape, tuple(SHAPES))
    check_number("model.scheduler.floor", floor, 0, 1)
    check_number("model.scheduler.hold", hold, 0, 1, open_high=True)


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
        hold: float = 0.0,
        progress: Callable[[], float] | None = None,
        last_epoch: int = -1,
    ) -> None:
        check_options(shape, floor, hold)
        self.shape, self.floor, self.hold, self.progress = shape, floor, hold, progress
        super().__init__(optimizer, last_epoch)

    def factor(self, spent: float) -> float:
        """``lr(p) / lr_0``."""
        decayed = max(0.0, (spent - self.hold) / (1.0 - self.hold))
        return self.floor + (1.0 - self.floor) * SHAPES[self.shape](decayed)

    def get_lr(self) -> list[float]:
        factor = self.factor(self.progress() if self.progress is not None else 0.0)
        return [base * factor for base in self.base_lrs]

    def state_dict(self) -> dict[str, Any]:
        return {k: v for k, v in super().state_dict().items() if k != "progress"}
