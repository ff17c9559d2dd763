"""Throughput: training tokens and seconds, tokens per second in the progress bar and logs."""

from __future__ import annotations

import time
from typing import Any

import lightning as L

from rnnlab.training.logging_steps import is_logging_step
from rnnlab.training.run_state import run_state


class Throughput(L.Callback):
    """Counts the tokens and seconds of every training batch; they travel in checkpoints.

    A batch's time runs from its start to its end, optimizer step included, so
    ``tokens_per_sec`` is what training costs, without validation or start-up. It is
    counted before Lightning's checkpoint callbacks run (they always run last), so a
    checkpoint saved at a batch's end counts that batch.
    """

    def __init__(self) -> None:
        self.tokens, self.seconds = 0, 0.0
        self._start, self._logging = 0.0, False

    @property
    def tokens_per_sec(self) -> float:
        return self.tokens / max(self.seconds, 1e-9)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._start, self._logging = time.perf_counter(), is_logging_step(trainer)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, *args: Any
    ) -> None:
        _, targets = batch
        self.tokens += targets.numel()
        self.seconds += time.perf_counter() - self._start
        if self._logging:
            pl_module.log("train/tokens_per_sec", self.tokens_per_sec, prog_bar=True)

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        run_state(checkpoint).update(train_tokens=self.tokens, train_seconds=self.seconds)

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if trainer.state.fn == "fit":  # testing the best checkpoint must not rewind the count
            state = run_state(checkpoint)
            self.tokens = state.get("train_tokens", 0)
            self.seconds = state.get("train_seconds", 0.0)
