"""GradientMonitor: per-layer gradient norms and weight/gradient histograms in TensorBoard.

Vanishing and exploding gradients are what a vanilla RNN is studied for. The norms
are taken before clipping (Lightning calls ``on_before_optimizer_step`` before it
clips), so they show what BPTT produced, not what the optimizer was allowed to use.
Parameter names are the same on both backends, so their curves overlay.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.utilities import grad_norm

from rnnlab.training.tensorboard import tensorboard_writers


class GradientMonitor(L.Callback):
    """Logs ``grad_norm/<parameter>`` and the total every ``every_n_steps`` optimizer steps,
    and histograms of every weight and gradient every ``histogram_every_n_steps``."""

    def __init__(
        self, every_n_steps: int = 20, histogram_every_n_steps: int = 200, norm_type: float = 2.0
    ) -> None:
        self.every_n_steps = every_n_steps
        self.histogram_every_n_steps = histogram_every_n_steps
        self.norm_type = norm_type

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any
    ) -> None:
        step = trainer.global_step
        writers = tensorboard_writers(trainer)
        if not writers:
            return
        if step % self.every_n_steps == 0:
            # grad_norm's keys: "grad_2.0_norm/<parameter>" and "grad_2.0_norm_total"
            for key, norm in grad_norm(pl_module, self.norm_type).items():
                tag = "grad_norm/" + (key.split("/", 1)[1] if "/" in key else "total")
                for writer in writers:
                    writer.add_scalar(tag, float(norm), step)
        if step % self.histogram_every_n_steps == 0:
            for name, param in pl_module.named_parameters():
                for writer in writers:
                    writer.add_histogram(f"weights/{name}", param.detach(), step)
                    if param.grad is not None:  # a sparse one (model.sparse_embedding) in full
                        grad = param.grad.to_dense() if param.grad.is_sparse else param.grad
                        writer.add_histogram(f"gradients/{name}", grad, step)
