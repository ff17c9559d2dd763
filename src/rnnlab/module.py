"""RNNLMModule: the LightningModule that trains an RNNLM with truncated BPTT.

Lightning 2.x has no built-in truncated BPTT. As in the PyTorch
word_language_model example, each training batch is one ``(B, T)`` window of an
unshuffled, contiguous stream; the hidden state it ends with is detached and kept
on the module for the next batch (gradients stop at the window edge, the state
does not), and reset at every epoch start. A checkpoint also holds that state and
every RNG, so a run resumed mid-epoch continues exactly. Validation and test carry
their own state over the whole split, and their loss is the token-weighted mean
NLL over the split: ``ppl = exp(loss)``, ``bpc = loss / ln 2`` at char level.
"""

from __future__ import annotations

import math
import pickle
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torchmetrics import MeanMetric

from rnnlab.data.vocab import Vocab
from rnnlab.errors import UserError
from rnnlab.model import RNNLM
from rnnlab.sampling import sample_text


def lm_metrics(loss: float, char_level: bool) -> dict[str, float]:
    """Loss in nats per token, perplexity, and bits per character at char level."""
    metrics = {"loss": loss, "ppl": math.exp(min(loss, 700.0))}
    if char_level:
        metrics["bpc"] = loss / math.log(2)
    return metrics


def read_checkpoint(path: str | Path, map_location: str = "cpu") -> dict[str, Any]:
    """An rnnlab checkpoint as plain data: ``torch.load(weights_only=True)``, never pickle code."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist; check ckpt_path.")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as exc:
        raise UserError(
            f"{path} is not a readable checkpoint ({type(exc).__name__}); "
            "it may be truncated or not a PyTorch file."
        ) from None
    if "vocab" not in checkpoint.get("hyper_parameters", {}) or "state_dict" not in checkpoint:
        raise UserError(f"{path} is not an rnnlab checkpoint: it holds no vocabulary.")
    return checkpoint


class NonFiniteLoss(UserError):
    """The loss became NaN or infinite (too high a learning rate, as a rule)."""

    def __init__(self, where: str) -> None:
        super().__init__(
            f"training stopped: {where}; the last checkpoint before it is intact. "
            "Lower model.optimizer.lr or clip harder (trainer.gradient_clip_val)."
        )


def rng_states() -> dict[str, Any]:
    """Every global RNG's state as plain data (tensors, ints, lists): safe for weights_only."""
    numpy_state = np.random.get_state(legacy=False)
    mt19937 = numpy_state["state"]
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {**numpy_state, "state": {"key": mt19937["key"].tolist(), "pos": mt19937["pos"]}},
        "python": random.getstate(),
    }


def set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    numpy_state, mt19937 = states["numpy"], states["numpy"]["state"]
    key = np.asarray(mt19937["key"], dtype=np.uint32)
    np.random.set_state({**numpy_state, "state": {"key": key, "pos": mt19937["pos"]}})
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))


def tensorboard_writers(trainer: L.Trainer) -> list[Any]:
    """The SummaryWriters of a trainer's TensorBoard loggers, on rank 0 only (else none)."""
    if not trainer.is_global_zero:
        return []
    return [lg.experiment for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]


class RNNLMModule(L.LightningModule):
    """Trains :class:`~rnnlab.model.RNNLM`; the vocabulary travels in the checkpoint."""

    def __init__(
        self,
        vocab: dict[str, Any],
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., Any] | None = None,
        sample_tokens: int = 200,
        sample_temperature: float = 0.8,
        **net: Any,
    ) -> None:
        """``net`` holds :class:`~rnnlab.model.RNNLM`'s arguments (backend, hidden_size, ...)."""
        super().__init__()
        # Plain types only, so checkpoints load with torch.load(weights_only=True);
        # train.py logs hparams itself, together with the final metrics.
        self.save_hyperparameters(ignore=["optimizer", "scheduler"], logger=False)
        self.vocab = Vocab.from_dict(vocab)
        self.net = RNNLM(len(self.vocab), **net)
        self.hparams["backend"] = self.net.backend  # recorded even when left to its default
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.char_level = self.vocab.level == "char"
        self.train_hidden: torch.Tensor | None = None
        self.eval_hidden: torch.Tensor | None = None
        self.val_nll = MeanMetric().set_dtype(torch.float64)
        self.test_nll = MeanMetric().set_dtype(torch.float64)
        #: the last full-precision loss of each evaluated split, and the best val loss
        self.losses: dict[str, float] = {}
        self.train_tokens, self.train_seconds = 0, 0.0
        self._batch_start, self._logging = 0.0, False
        #: whether every training loss since step ``_finite_step`` was finite (a device tensor)
        self._finite: torch.Tensor | None = None
        self._finite_step = 0
        self._restored_rng: dict[str, Any] | None = None

    def forward(
        self, tokens: torch.Tensor, hidden: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net(tokens, hidden)

    # -- training: one window per step, state carried and detached ------------------
    # Nothing here waits for the device between logging steps: a scalar logged is a host
    # sync on GPU and, in Lightning, about 1 ms of bookkeeping on CPU.
    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self._batch_start = time.perf_counter()
        self._logging = (self.global_step + 1) % self.trainer.log_every_n_steps == 0

    def training_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> torch.Tensor:
        inputs, targets = batch
        if batch_idx == 0:  # a new pass over the stream (a resumed epoch goes on where it was)
            self.train_hidden = None
        loss, hidden = self.net.loss(inputs, targets, self.train_hidden)
        self.train_hidden = hidden.detach()
        finite = torch.isfinite(loss.detach())
        self._finite = finite if self._finite is None else self._finite & finite
        if self._logging:
            self.check_finite()  # before backward: this step's update never happens
            self.log("train/loss", loss, prog_bar=True)
        self.train_tokens += targets.numel()  # here: a checkpoint at this batch's end counts it
        return loss

    def check_finite(self) -> None:
        """Stop if a training loss since the last check was NaN or infinite (one host sync).

        Called at logging steps, before validation and before every checkpoint, so no
        checkpoint ever holds the weights a non-finite loss produced.
        """
        if self._finite is not None and not bool(self._finite):
            raise NonFiniteLoss(
                f"the loss became NaN or infinite after step {self._finite_step} "
                f"(noticed at step {self.global_step}, epoch {self.current_epoch})"
            )
        self._finite, self._finite_step = None, self.global_step

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.train_seconds += time.perf_counter() - self._batch_start
        if self._logging:
            self.log("train/tokens_per_sec", self.tokens_per_sec, prog_bar=True)

    # -- exact resumption: what the optimizer, scheduler and loops do not save -------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.check_finite()
        checkpoint["rnnlab"] = {
            "train_hidden": self.train_hidden,
            "losses": dict(self.losses),
            "train_tokens": self.train_tokens,
            "train_seconds": self.train_seconds,
            "rng": rng_states(),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self._trainer is None or self.trainer.state.fn != "fit":
            return  # testing the best checkpoint must not rewind this run's bookkeeping
        state = checkpoint.get("rnnlab", {})
        self.train_hidden = state.get("train_hidden")
        self.losses = dict(state.get("losses", {}))
        self.train_tokens = state.get("train_tokens", 0)
        self.train_seconds = state.get("train_seconds", 0.0)
        self._restored_rng = state.get("rng")

    def on_train_start(self) -> None:
        self._finite_step = self.global_step
        # Set here, not when loading: Lightning draws nothing from the global RNGs
        # between this hook and the first batch, as it does not in an uninterrupted run.
        if self._restored_rng is not None:
            set_rng_states(self._restored_rng)
            self._restored_rng = None

    @property
    def tokens_per_sec(self) -> float:
        return self.train_tokens / max(self.train_seconds, 1e-9)

    # -- evaluation: the whole split with a carried state, token-weighted ------------
    def _evaluate(self, batch: tuple[torch.Tensor, torch.Tensor], metric: MeanMetric) -> None:
        inputs, targets = batch
        loss, self.eval_hidden = self.net.loss(inputs, targets, self.eval_hidden)
        metric.update(loss, targets.numel())

    def _log_split(self, split: str, metric: MeanMetric) -> float:
        loss = float(metric.compute())
        metric.reset()
        values = lm_metrics(loss, self.char_level)
        self.log_dict({f"{split}/{k}": v for k, v in values.items()}, prog_bar=split == "val")
        return loss

    def on_validation_epoch_start(self) -> None:
        self.check_finite()
        self.eval_hidden = None

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, self.val_nll)

    def on_validation_epoch_end(self) -> None:
        loss = self._log_split("val", self.val_nll)
        if self.trainer.sanity_checking:
            return
        if not math.isfinite(loss):
            raise NonFiniteLoss(f"the val loss is {loss} after step {self.global_step}")
        self.losses["val"] = loss
        self.losses["best_val"] = min(self.losses.get("best_val", math.inf), loss)
        self._log_sample()

    def on_test_epoch_start(self) -> None:
        self.eval_hidden = None

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, self.test_nll)

    def on_test_epoch_end(self) -> None:
        self.losses["test"] = self._log_split("test", self.test_nll)

    def final_metrics(self) -> dict[str, dict[str, float]]:
        """Loss, ppl (and bpc) of the last val, the best val and the test run, as far as run."""
        splits = ("val", "best_val", "test")
        return {
            s: lm_metrics(self.losses[s], self.char_level) if s in self.losses else {}
            for s in splits
        }

    def sample(self, prompt: str = "", num_tokens: int | None = None, seed: int = 0) -> str:
        """Text generated from the current weights (a private RNG: training is unaffected).

        Unknown prompt tokens become ``<unk>``: a courtesy sample never fails a run.
        """
        tokens = num_tokens or self.hparams.sample_tokens
        temperature = self.hparams.sample_temperature
        return sample_text(
            self.net,
            self.vocab,
            prompt,
            tokens,
            allow_unknown=True,
            temperature=temperature,
            seed=seed,
        )

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, backend: str | None = None, map_location: str = "cpu"
    ) -> RNNLMModule:
        """A trained module from its checkpoint alone, on either backend."""
        checkpoint = read_checkpoint(path, map_location)
        hparams = {**checkpoint["hyper_parameters"], **({"backend": backend} if backend else {})}
        module = cls(**hparams)
        module.load_state_dict(checkpoint["state_dict"])
        return module

    def _log_sample(self) -> None:
        writers = tensorboard_writers(self.trainer)
        if not writers or self.hparams.sample_tokens < 1:
            return
        text = self.sample()
        block = "\n".join("    " + line for line in text.split("\n"))  # markdown code block
        for writer in writers:
            writer.add_text("sample", block, self.global_step)

    def configure_optimizers(self) -> Any:
        if self.optimizer_factory is None:
            raise RuntimeError("RNNLMModule needs an optimizer factory to train")
        optimizer = self.optimizer_factory(params=self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {
            "optimizer": optimizer,
            # stepped after each validation; strict=False: a run without one keeps its lr
            "lr_scheduler": {
                "scheduler": scheduler,
                "monitor": "val/loss",
                "interval": "epoch",
                "frequency": self.trainer.check_val_every_n_epoch,
                "strict": False,
            },
        }
