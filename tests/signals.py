"""A callback for tests: this process signals itself in the middle of a given training step."""

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
