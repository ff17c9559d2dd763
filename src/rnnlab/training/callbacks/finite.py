"""FiniteGuard: a NaN or infinite loss stops training in one sentence, no checkpoint holding it."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch

from rnnlab.errors import UserError
from rnnlab.training.logging_steps import is_logging_step


class NonFiniteLoss(UserError):
    """The loss became NaN or infinite (too high a learning rate, as a rule)."""

    def __init__(self, where: str) -> None:
        super().__init__(
            f"training stopped: {where}; the last checkpoint before it is intact. "
            "Lower model.optimizer.lr or clip harder (trainer.gradient_clip_val)."
        )


class FiniteGuard(L.Callback):
    """Stops the run when a training or validation loss is NaN or infinite.

    Every training loss is folded into one flag on the device (no host sync); the flag
    is read at logging steps before backward (so that step's update never happens),
    before each validation and before every checkpoint is written, so no checkpoint
    ever holds the weights a non-finite loss produced.
    """

    def __init__(self) -> None:
        #: whether every training loss since step ``_checked_step`` was finite (a device tensor)
        self._finite: torch.Tensor | None = None
        self._checked_step = 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._checked_step = trainer.global_step

    def on_before_backward(
        self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor
    ) -> None:
        finite = torch.isfinite(loss.detach())
        self._finite = finite if self._finite is None else self._finite & finite
        if is_logging_step(trainer):
            self.check(trainer)

    def check(self, trainer: L.Trainer) -> None:
        """Stop if a training loss since the last check was NaN or infinite (one host sync)."""
        if self._finite is not None and not bool(self._finite):
            raise NonFiniteLoss(
                f"the loss became NaN or infinite after step {self._checked_step} "
                f"(noticed at step {trainer.global_step}, epoch {trainer.current_epoch})"
            )
        self._finite, self._checked_step = None, trainer.global_step

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "fit":
            self.check(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loss = trainer.callback_metrics.get("val/loss")
        if trainer.sanity_checking or loss is None or math.isfinite(float(loss)):
            return
        raise NonFiniteLoss(f"the val loss is {float(loss)} after step {trainer.global_step}")

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        self.check(trainer)
