"""Callbacks for tests: a run signals itself, or crashes, in the middle of a given step."""

import os
import signal

import lightning as L


class SignalAtStep(L.Callback):
    """Sends ``signal`` (a name such as ``SIGKILL``) after the backward of step ``step``,
    before its optimizer update: a moment where a checkpoint would be inconsistent.
    A resumed run (which keeps this callback in its saved config) is left alone."""

    def __init__(self, step: int, signal: str) -> None:
        self.step, self.signal = step, signal

    def on_before_optimizer_step(self, trainer: L.Trainer, *args: object) -> None:
        if trainer.global_step == self.step and trainer.ckpt_path is None:
            os.kill(os.getpid(), getattr(signal, self.signal))


class CrashAtStep(L.Callback):
    """Raises after the backward of step ``step``, before its update: a crash in this very
    process, for resume tests that need no second one. A resumed run is left alone."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_before_optimizer_step(self, trainer: L.Trainer, *args: object) -> None:
        if trainer.global_step == self.step and trainer.ckpt_path is None:
            raise RuntimeError(f"crashed at step {self.step}")
