"""RNNLMModule: the LightningModule that trains an RNNLM with truncated BPTT.

Lightning 2.x has no built-in truncated BPTT. As in the PyTorch
word_language_model example, each training batch is one ``(B, T)`` window of an
unshuffled, contiguous stream; the hidden state it ends with is detached and kept
on the module for the next batch (gradients stop at the window edge, the state
does not), and reset at every epoch start. A checkpoint also holds that state, so a
run resumed mid-epoch continues exactly. Validation and test carry their own state
over the whole split, and their loss is the token-weighted mean NLL over the split:
``ppl = exp(loss)``, ``bpc = loss / ln 2`` at char level.

The plumbing around it lives in callbacks (:mod:`rnnlab.training.callbacks`):
throughput, the NaN/inf guard, Ctrl-C, the RNG states in checkpoints.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torchmetrics import MeanMetric

from rnnlab.data.vocab import Vocab
from rnnlab.nn.cores import State, detached
from rnnlab.nn.lm import RNNLM, ModelConfig
from rnnlab.nn.sampling import sample_text
from rnnlab.training.budget import BudgetDecay, budget_spent
from rnnlab.training.checkpoint import read_checkpoint
from rnnlab.training.logging_steps import is_logging_step
from rnnlab.training.run_state import run_state
from rnnlab.training.sparse_gradients import check_sparse_optimizer, clip_gradients_
from rnnlab.training.tensorboard import tensorboard_writers


def lm_metrics(loss: float, char_level: bool) -> dict[str, float]:
    """Loss in nats per token, perplexity, and bits per character at char level."""
    metrics = {"loss": loss, "ppl": math.exp(min(loss, 700.0))}
    if char_level:
        metrics["bpc"] = loss / math.log(2)
    return metrics


class RNNLMModule(L.LightningModule):
    """Trains :class:`~rnnlab.nn.lm.RNNLM`; the vocabulary travels in the checkpoint."""

    def __init__(
        self,
        vocab: dict[str, Any],
        config: ModelConfig,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., Any] | None = None,
        sample_tokens: int = 200,
        sample_temperature: float = 0.8,
    ) -> None:
        """``config``: the model's settings, built and checked once by the entry point."""
        super().__init__()
        self.vocab = Vocab.from_dict(vocab)
        self.net = RNNLM(len(self.vocab), config)
        # Plain types only, so checkpoints load with torch.load(weights_only=True); every
        # model setting, resolved for the vocabulary, so the checkpoint rebuilds this very
        # model. The entry point logs hparams itself, together with the final metrics.
        self.save_hyperparameters(
            {
                "vocab": vocab,
                "sample_tokens": sample_tokens,
                "sample_temperature": sample_temperature,
                **dataclasses.asdict(self.net.config),
            },
            logger=False,
        )
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.char_level = self.vocab.level == "char"
        self.train_hidden: State | None = None
        self.eval_hidden: State | None = None
        self.val_nll = MeanMetric().set_dtype(torch.float64)
        self.test_nll = MeanMetric().set_dtype(torch.float64)
        #: the last full-precision loss of each evaluated split, and the best val loss
        self.losses: dict[str, float] = {}
        #: every validation of the run: its epoch, optimizer step, and val loss
        self.val_curve: list[dict[str, float]] = []

    def forward(
        self, tokens: torch.Tensor, hidden: State | None = None
    ) -> tuple[torch.Tensor, State]:
        return self.net(tokens, hidden)

    # -- training: one window per step, state carried and detached ------------------
    def training_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> torch.Tensor:
        inputs, targets = batch
        if batch_idx == 0:  # a new pass over the stream (a resumed epoch goes on where it was)
            self.train_hidden = None
        loss, hidden = self.net.loss(inputs, targets, self.train_hidden)
        self.train_hidden = detached(hidden)
        if self._trainer is not None and is_logging_step(self.trainer):  # self.log syncs
            self.log("train/loss", loss, prog_bar=True)
        return loss

    # -- exact resumption: the state carried between windows, the losses so far -----
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        run_state(checkpoint).update(
            train_hidden=self.train_hidden,
            losses=dict(self.losses),
            val_curve=[dict(point) for point in self.val_curve],
        )

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self._trainer is None or self.trainer.state.fn != "fit":
            return  # testing the best checkpoint must not rewind this run's bookkeeping
        state = run_state(checkpoint)
        self.train_hidden = state.get("train_hidden")
        self.losses = dict(state.get("losses", {}))
        self.val_curve = [dict(point) for point in state.get("val_curve", [])]

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
        self.eval_hidden = None

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, self.val_nll)

    def on_validation_epoch_end(self) -> None:
        loss = self._log_split("val", self.val_nll)
        if self.trainer.sanity_checking:
            return
        self.losses["val"] = loss
        self.losses["best_val"] = min(self.losses.get("best_val", math.inf), loss)
        self.val_curve.append({"epoch": self.current_epoch, "step": self.global_step, "loss": loss})
        if math.isfinite(loss):
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

    # -- sampling ---------------------------------------------------------------------
    def sample(self, prompt: str = "", num_tokens: int | None = None, seed: int = 0) -> str:
        """Text generated from the current weights (a private RNG: training is unaffected).

        Unknown prompt tokens become ``<unk>``: a courtesy sample never fails a run.
        """
        return sample_text(
            self.net,
            self.vocab,
            prompt,
            num_tokens or self.hparams.sample_tokens,
            allow_unknown=True,
            temperature=self.hparams.sample_temperature,
            seed=seed,
        )

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, backend: str | None = None, map_location: str = "cpu"
    ) -> RNNLMModule:
        """A trained module from its checkpoint alone, on either backend."""
        checkpoint = read_checkpoint(path, map_location)
        hparams = checkpoint["hyper_parameters"]
        config = ModelConfig.from_settings(hparams)
        if backend:  # the other backend's numbers; builtin has no bptt of its own
            bptt = config.bptt if backend == "custom" else ModelConfig.bptt
            config = dataclasses.replace(config, backend=backend, bptt=bptt)
        module = cls(
            hparams["vocab"],
            config,
            sample_tokens=hparams.get("sample_tokens", 200),
            sample_temperature=hparams.get("sample_temperature", 0.8),
        )
        module.load_state_dict(checkpoint["state_dict"])
        return module

    @classmethod
    def load_from_checkpoint(  # type: ignore[override]
        cls, checkpoint_path: str | Path, map_location: str = "cpu", backend: str | None = None
    ) -> RNNLMModule:
        """Lightning's name for :meth:`from_checkpoint`: Lightning's own would pass the saved
        settings as keywords, where this module takes them as one :class:`ModelConfig`."""
        return cls.from_checkpoint(checkpoint_path, backend, map_location)

    def _log_sample(self) -> None:
        writers = tensorboard_writers(self.trainer)
        if not writers or self.hparams.sample_tokens < 1:
            return
        text = self.sample()
        block = "\n".join("    " + line for line in text.split("\n"))  # markdown code block
        for writer in writers:
            writer.add_text("sample", block, self.global_step)

    # -- optimisation -----------------------------------------------------------------
    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """Lightning's clipping, which calls torch's, unless the embedding's gradient is
        sparse: torch's refuses it, so :func:`clip_gradients_` clips the same way."""
        if not self.net.config.sparse_embedding:
            super().configure_gradient_clipping(
                optimizer, gradient_clip_val, gradient_clip_algorithm
            )
        elif gradient_clip_val:
            clip_gradients_(self.parameters(), gradient_clip_val, gradient_clip_algorithm or "norm")

    def configure_optimizers(self) -> Any:
        if self.optimizer_factory is None:
            raise RuntimeError("RNNLMModule needs an optimizer factory to train")
        optimizer = self.optimizer_factory(params=self.parameters())
        if self.net.config.sparse_embedding:
            check_sparse_optimizer(optimizer)
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        if isinstance(scheduler, BudgetDecay):  # after every step, over the Trainer's budget
            scheduler.progress = lambda: budget_spent(self.trainer)
            return {
                "optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
            }
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
