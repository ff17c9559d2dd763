"""Checkpoints: which ones a run writes, written whole, read as plain data, RNG state inside.

- :func:`checkpoint_callbacks`: ``last.ckpt`` every N steps and at each epoch end, the
  best by val loss, and one more on Ctrl-C: what ``resume=`` and the final test rely on,
  so ``rnnlab-train`` installs them whatever ``callbacks=`` says (``checkpoint=none``
  turns them off).
- :class:`AtomicCheckpointIO`: Lightning's default writes the target file in place (or
  moves a temporary file across file systems), so a kill while saving can leave a
  truncated ``last.ckpt``; this one never does.
- :func:`read_checkpoint`: ``torch.load(weights_only=True)``; rnnlab stores only plain
  types (the vocabulary, settings, RNG states), so no pickle is ever loaded.
- :class:`RandomStateCheckpoint`: every global RNG in each checkpoint, restored when
  training resumes, so dropout after a resume draws what it would have drawn.

What rnnlab itself keeps in a checkpoint sits under one key, :data:`STATE_KEY`, each
owner (the module, the throughput counter, the RNG states) writing its own entries.
"""

from __future__ import annotations

import pickle
import random
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from rnnlab.atomic import write_atomically
from rnnlab.data.vocab import Vocab
from rnnlab.errors import UserError
from rnnlab.training.callbacks.interrupt import SaveOnInterrupt

#: the checkpoint entry holding rnnlab's own state: the carried hidden state, losses, counters, RNGs
STATE_KEY = "rnnlab"


def run_state(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """rnnlab's entries of a checkpoint (made empty if it has none yet)."""
    return checkpoint.setdefault(STATE_KEY, {})


def checkpoint_callbacks(
    dirpath: str | Path,
    every_n_train_steps: int = 200,
    monitor: str = "val/loss",
    mode: str = "min",
    validating: bool = True,
) -> list[Callback]:
    """The checkpoints a run writes into ``dirpath``.

    ``last.ckpt`` (one file, overwritten in place) at each epoch end, one cut short by
    ``trainer.max_steps`` included, and every ``every_n_train_steps`` steps, so a killed
    run loses at most that many; ``best-*.ckpt`` by ``monitor`` after each validation,
    when the run validates (the final test reads it: as ``trainer.checkpoint_callback``
    it comes first); one more on Ctrl-C.
    """
    last = {"dirpath": dirpath, "save_top_k": 0, "save_last": True, "enable_version_counter": False}
    callbacks: list[Callback] = [
        ModelCheckpoint(**last),
        ModelCheckpoint(**last, every_n_train_steps=every_n_train_steps),
        SaveOnInterrupt(dirpath),
    ]
    if validating:
        best = ModelCheckpoint(
            dirpath=dirpath,
            filename="best-epoch{epoch:03d}-step{step}",
            auto_insert_metric_name=False,
            monitor=monitor,
            mode=mode,
            save_top_k=1,
            save_on_train_epoch_end=False,
            enable_version_counter=False,
        )
        callbacks.insert(0, best)
    return callbacks


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` to a temporary file beside the target, then an atomic rename."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None
    ) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, lambda file: torch.save(checkpoint, file))


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


def check_vocab(path: str | Path, vocab: Vocab) -> None:
    """Refuse to go on from a checkpoint trained on another vocabulary (naming both sizes)."""
    saved = Vocab.from_dict(read_checkpoint(path)["hyper_parameters"]["vocab"])
    if saved != vocab:
        raise UserError(
            f"checkpoint {path} was trained on a {saved.level}-level vocabulary of "
            f"{len(saved)} tokens, but this data gives a {vocab.level}-level one of {len(vocab)}; "
            "resume with the same data settings, or train from scratch."
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


class RandomStateCheckpoint(Callback):
    """Saves every global RNG with each checkpoint; a resumed fit starts from them."""

    def __init__(self) -> None:
        self._restored: dict[str, Any] | None = None

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        run_state(checkpoint)["rng"] = rng_states()

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if trainer.state.fn == "fit":  # testing a checkpoint must not rewind the run's RNGs
            self._restored = run_state(checkpoint).get("rng")

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Set here, not when loading: Lightning draws nothing from the global RNGs between
        # this hook and the first batch, as it does not in an uninterrupted run.
        if self._restored is not None:
            set_rng_states(self._restored)
            self._restored = None
