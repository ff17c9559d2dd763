"""RandomStateCheckpoint: every global RNG in each checkpoint, restored when training resumes,
so that dropout after a resume draws what it would have drawn."""

from __future__ import annotations

import random
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

from rnnlab.training.run_state import run_state


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
