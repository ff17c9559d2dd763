"""DynamicsMonitor: how far gradients reach back in time, and why (``callbacks=dynamics``).

Per-parameter gradient norms say a gradient is small, not how far back in time it
reaches. This callback runs the probes of :mod:`rnnlab.nn.dynamics` on one fixed window
of the validation stream (its first ``window + 1`` columns, ``batch_size`` rows, from a
zero state) after each validation, or every ``every_n_steps`` optimizer steps, and logs:

- ``dynamics/grad/l<k>/lag_<j>``: ``mean_b ||dl_T / dh_{T-j}||`` of layer ``k`` at lags
  1, 10, 25, 50, 100 (those within the window), and an image of it against every lag
  (``dynamics/grad_through_time``, log scale, a line per layer);
- ``dynamics/reach/l<k>``: the lag at which that gradient first falls below 1e-3 of its
  value at lag 0 (the window's length when it never does);
- ``dynamics/jacobian_norm/l<k>``: the mean spectral norm of the step Jacobian;
- ``dynamics/spectrum/l<k>/<gate>/sigma_max`` and ``.../radius`` of each ``W_hh`` block
  (for minGRU and minLSTM ``dynamics/spectrum/l<k>/a/mean`` and ``.../above_0.99``);
- ``dynamics/saturation/l<k>/<activation>``: the share of saturated units.

The tags are the same on both backends. The probe touches neither the training random
state (its power iteration draws from a private generator, and it runs no dropout) nor
the state carried between training batches, nor any parameter's ``.grad``: a run with it
trains exactly as one without.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from rnnlab.data.datamodule import batchify
from rnnlab.errors import check_int
from rnnlab.nn.dynamics import (
    gradient_through_time,
    reach,
    recurrent_spectrum,
    saturation,
    step_jacobian_norm,
    trace,
)
from rnnlab.nn.lm import RNNLM
from rnnlab.training.tensorboard import tensorboard_writers

#: the lags logged as scalars (those the window holds)
LAGS = (1, 10, 25, 50, 100)


class DynamicsMonitor(L.Callback):
    """Probes the recurrent dynamics on a fixed validation window (see the module doc)."""

    def __init__(
        self,
        every_n_steps: int | None = None,
        batch_size: int = 8,
        window: int = 100,
        power_iterations: int = 20,
    ) -> None:
        if every_n_steps is not None:
            check_int("callbacks.dynamics_monitor.every_n_steps", every_n_steps, 1)
        check_int("callbacks.dynamics_monitor.batch_size", batch_size, 1)
        check_int("callbacks.dynamics_monitor.window", window, 1)
        check_int("callbacks.dynamics_monitor.power_iterations", power_iterations, 1)
        self.every_n_steps, self.batch_size = every_n_steps, batch_size
        self.window, self.power_iterations = window, power_iterations
        self.tokens: torch.Tensor | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Cut the probe window from the validation stream (shorter if the stream is)."""
        datamodule = trainer.datamodule
        if stage != "fit" or datamodule is None or not datamodule.has_split("val"):
            return
        if pl_module.net.window is not None:
            rank_zero_info(
                "callbacks=dynamics probes recurrent layers, and an attention model has none: "
                "it probes nothing in this run."
            )
            return
        rows = batchify(datamodule.ids["val"], self.batch_size)
        if rows.shape[1] < self.window + 1:
            rank_zero_warn(
                f"the validation split holds {rows.shape[1]} tokens per row of "
                f"{self.batch_size}, so the dynamics probe window is {rows.shape[1] - 1} "
                f"steps, not {self.window}."
            )
        self.tokens = torch.as_tensor(rows[:, : self.window + 1].astype(np.int64))

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any
    ) -> None:
        if self.every_n_steps and trainer.global_step % self.every_n_steps == 0:
            self.probe(trainer, pl_module.net)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.every_n_steps is None and not trainer.sanity_checking:
            self.probe(trainer, pl_module.net)

    def probe(self, trainer: L.Trainer, net: RNNLM) -> None:
        """Run the probes and log them at the current step, on rank 0 only."""
        if self.tokens is None or self.tokens.shape[1] < 2 or not trainer.is_global_zero:
            return
        ids = self.tokens.to(next(net.parameters()).device)
        with torch.inference_mode(False), torch.enable_grad():  # validation runs in inference mode
            tr = trace(net, ids[:, :-1])
            g = gradient_through_time(tr, ids[:, 1:]).cpu()  # read number by number below
            jacobian = step_jacobian_norm(net, tr, self.power_iterations)
        metrics = scalars(g, jacobian, recurrent_spectrum(net, tr), saturation(net, tr))
        step = trainer.global_step
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)
        writers = tensorboard_writers(trainer)
        if writers:
            image = gradient_image(g)
            for writer in writers:
                writer.add_image("dynamics/grad_through_time", image, step, dataformats="HWC")


def scalars(
    g: torch.Tensor,
    jacobian: list[float],
    spectrum: list[dict[str, dict[str, float]]],
    saturated: list[dict[str, float]],
) -> dict[str, float]:
    """The probes' numbers under their TensorBoard tags (see the module doc)."""
    metrics: dict[str, float] = {}
    for k, layer in enumerate(g):
        prefix = f"l{k}"
        metrics |= {
            f"dynamics/grad/{prefix}/lag_{j}": float(layer[j]) for j in LAGS if j < len(layer)
        }
        metrics[f"dynamics/reach/{prefix}"] = float(reach(layer))
        metrics[f"dynamics/jacobian_norm/{prefix}"] = jacobian[k]
        for gate, values in spectrum[k].items():
            metrics |= {f"dynamics/spectrum/{prefix}/{gate}/{n}": v for n, v in values.items()}
        metrics |= {f"dynamics/saturation/{prefix}/{n}": v for n, v in saturated[k].items()}
    return metrics


def gradient_image(g: torch.Tensor) -> np.ndarray:
    """``g`` against the lag, log scale, a line per layer, as an RGB array ``(H, W, 3)``."""
    fig = Figure(figsize=(6, 3.6), dpi=80)
    ax = fig.subplots()
    for k, layer in enumerate(g.double().numpy()):
        ax.semilogy(np.arange(len(layer)), np.maximum(layer, 1e-30), label=f"layer {k}")
    ax.set_xlabel("lag T - t (steps back from the last prediction)")
    ax.set_ylabel("mean ||dL_T / dh_t||")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()
