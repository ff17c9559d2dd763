"""Checkpoints that survive being killed: written atomically, and one more on Ctrl-C.

Lightning writes checkpoints through its ``CheckpointIO``; its default writes the
target file in place (or moves a temporary file across file systems), so a kill
while saving can leave a truncated ``last.ckpt``. :class:`AtomicCheckpointIO`
(configs/trainer/default.yaml) never does. :class:`SaveOnInterrupt` turns the
first Ctrl-C into "finish this batch, save ``last.ckpt``, say how to resume, stop".
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any

import lightning as L
import rich
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from rnnlab.atomic import write_atomically


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` to a temporary file beside the target, then an atomic rename."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None
    ) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, lambda file: torch.save(checkpoint, file))


class SaveOnInterrupt(L.Callback):
    """Ctrl-C during training: save ``<dirpath>/last.ckpt`` after the current batch and stop.

    Stopping between batches keeps the checkpoint consistent (never half an optimizer
    step). A second Ctrl-C interrupts at once. Under DDP every process gets the signal
    at a different batch, so Lightning's own handling applies there.
    """

    def __init__(self, dirpath: str | Path) -> None:
        self.dirpath = Path(dirpath)
        self.requested = False
        self._previous: Any = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.world_size == 1 and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._request)

    def _request(self, signum: int, frame: Any) -> None:
        self.requested = True
        signal.signal(signal.SIGINT, self._previous)  # a second Ctrl-C stops at once
        rich.print("\n[yellow]Ctrl-C: saving a checkpoint after this batch[/yellow]")

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any
    ) -> None:
        if not self.requested:
            return
        path = self.dirpath / "last.ckpt"
        trainer.save_checkpoint(path)
        rich.print(
            f"interrupted at step {trainer.global_step}; saved {path}\n"
            f"resume with:  rnnlab-train resume={self.dirpath.parent}"
        )
        raise KeyboardInterrupt  # Lightning shuts down cleanly and exits with status 1

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
