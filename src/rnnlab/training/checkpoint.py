"""Checkpoints: which ones a run writes, written whole, read as plain data.

- :func:`checkpoint_callbacks`: ``last.ckpt`` every N steps and at each epoch end, the
  best by val loss, and one more on Ctrl-C: what ``resume=`` and the final test rely on,
  so ``rnnlab-train`` installs them whatever ``callbacks=`` says (``checkpoint=none``
  turns them off).
- :class:`AtomicCheckpointIO`: Lightning's default writes the target file in place (or
  moves a temporary file across file systems), so a kill while saving can leave a
  truncated ``last.ckpt``; this one never does.
- :func:`read_checkpoint`: ``torch.load(weights_only=True)``; rnnlab stores only plain
  types (the vocabulary, settings, RNG states), so no pickle is ever loaded;
  :func:`check_vocab` refuses to go on from a checkpoint of another vocabulary.

What rnnlab itself keeps inside a checkpoint (the carried state, losses, counters, RNG
states) is :mod:`rnnlab.training.run_state`'s; the RNG states are
:mod:`rnnlab.training.callbacks.random_state`'s.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from rnnlab.atomic import write_atomically
from rnnlab.data.vocab import Vocab
from rnnlab.errors import UserError
from rnnlab.training.callbacks.interrupt import SaveOnInterrupt


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
