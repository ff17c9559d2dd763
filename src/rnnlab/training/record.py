"""What a finished run leaves for later: the numbers of ``metrics.json`` and the HParams tab.

Its hyperparameters name every model setting after :class:`~rnnlab.nn.lm.ModelConfig`'s
fields, in full (defaults and cutoffs resolved), so a new setting appears in every run
record, sweep summary and TensorBoard HParams table without a list to keep by hand.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import os
import platform
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import Logger, TensorBoardLogger

from rnnlab.nn.lm import ModelConfig
from rnnlab.training.callbacks.throughput import Throughput
from rnnlab.training.module import RNNLMModule

SPLITS = ("val", "best_val", "test")


def run_hparams(model: ModelConfig, config: dict[str, Any]) -> dict[str, Any]:
    """The run's hyperparameters, flat: every model setting, and the data, optimizer and
    seed settings sweeps vary, from the run's resolved ``config``."""
    data, optimizer = config["data"], config["model"].get("optimizer") or {}
    return {
        **{name: plain(value) for name, value in dataclasses.asdict(model).items()},
        "level": data["level"],
        "seq_len": data["seq_len"],
        "batch_size": data["batch_size"],
        "optimizer": str(optimizer.get("_target_", "")).rsplit(".", 1)[-1],
        "lr": optimizer.get("lr"),
        "seed": config["seed"],
    }


def plain(value: Any) -> Any:
    """A setting as JSON has it: a tuple (the cutoffs) as a list."""
    return list(value) if isinstance(value, tuple) else value


def run_record(
    module: RNNLMModule,
    throughput: Throughput,
    trainer: L.Trainer,
    wall_seconds: float,
    config: dict[str, Any],
    memory: dict[str, float | None],
) -> dict[str, Any]:
    """Everything metrics.json records about a finished run (token counts over all ranks;
    ``memory``: this rank's resident MB when training started and at its peak)."""
    world = trainer.world_size  # under DDP every rank trains as many tokens as this one
    return {
        **module.final_metrics(),
        "val_curve": module.val_curve,
        "tokens_per_sec": throughput.tokens_per_sec * world,
        "train_tokens": throughput.tokens * world,
        "world_size": world,
        "train_seconds": throughput.seconds,
        "wall_seconds": wall_seconds,
        **memory,
        "torch_threads": torch.get_num_threads(),
        "steps": trainer.global_step,
        "epochs": trainer.current_epoch,
        "num_params": sum(p.numel() for p in module.parameters()),
        "vocab_size": len(module.vocab),
        "hparams": run_hparams(module.net.config, config),
        "machine": machine(),
    }


def machine() -> dict[str, Any]:
    """Where the run ran, so a time or a tokens/s figure can be read against its machine
    (the same preset runs at very different speeds on different CPUs)."""
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "lightning": version("lightning"),
        "rnnlab": version("rnnlab"),
    }


def cpu_model() -> str:
    """The CPU's name as Linux reports it, else what the platform module knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def version(package: str) -> str | None:
    """An installed package's version; None when it runs from a tree never installed."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def log_hparams(loggers: list[Logger], record: dict[str, Any]) -> None:
    """Hyperparameters with the final metrics, so TensorBoard's HParams tab compares runs."""
    finals = {f"hp/{split}_{k}": v for split in SPLITS for k, v in record[split].items()}
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.log_hyperparams(record["hparams"], finals)
        else:
            logger.log_hyperparams(record["hparams"])
            logger.log_metrics(finals)
        logger.save()
