"""SaveOnInterrupt: the first Ctrl-C finishes the batch, saves ``last.ckpt``, says how to resume."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any

import lightning as L
import rich


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
        rich.get_console().print(  # soft-wrapped: a long path stays one copyable line
            f"interrupted at step {trainer.global_step}; saved {path}\n"
            f"resume with:  rnnlab-train resume={self.dirpath.parent}",
            soft_wrap=True,
        )
        raise KeyboardInterrupt  # Lightning shuts down cleanly and exits with status 1

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
