"""The TensorBoard writers of a run: for what ``self.log`` cannot log (text, histograms)."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger


def tensorboard_writers(trainer: L.Trainer) -> list[Any]:
    """The SummaryWriters of a trainer's TensorBoard loggers, on rank 0 only (else none)."""
    if not trainer.is_global_zero:
        return []
    return [lg.experiment for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]
