"""The composed config, checked once before anything is built: one sentence per mistake.

Hydra composes whatever the command line says (``seed=abc``, ``model.optimizer.lr=-1``);
left alone, such a value would surface minutes later as PyTorch's or Lightning's
traceback, after the corpus was tokenized. The model's settings are checked by
:class:`~rnnlab.nn.lm.ModelConfig` itself, built once by the entry point, and the data's
by the DataModule's constructor; this module checks the rest of each entry point's config.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from omegaconf import DictConfig

from rnnlab.errors import UserError, check_bool, check_choice, check_int, check_number
from rnnlab.nn import BACKENDS
from rnnlab.training.budget import BudgetDecay
from rnnlab.training.budget import check_options as check_budget_options

#: what ``device=`` takes in rnnlab-sample and rnnlab-eval
DEVICES = ("cpu", "gpu", "auto")
#: the ``<split>/<metric>`` a sweeper minimises (optimized_metric)
METRIC_SPLITS, METRICS = ("val", "best_val", "test"), ("loss", "ppl", "bpc")
#: seeds numpy and Lightning accept
MAX_SEED = 2**32 - 1


def check_train(cfg: DictConfig) -> None:
    """rnnlab-train's config besides the model's own settings (:class:`ModelConfig` checks
    those as the entry point builds it): seed, optimizer, schedule, trainer limits,
    checkpoints, threads, the allocator."""
    check_seed(cfg.seed)
    optimizer = cfg.model.get("optimizer") or {}
    if "lr" in optimizer:
        check_number("model.optimizer.lr", optimizer.lr, 0, open_low=True)
    if "weight_decay" in optimizer:
        check_number("model.optimizer.weight_decay", optimizer.weight_decay, 0)
    scheduler = cfg.model.get("scheduler") or {}
    if scheduler.get("_target_") == f"{BudgetDecay.__module__}.{BudgetDecay.__name__}":
        check_budget_options(
            **{k: scheduler[k] for k in ("shape", "floor", "hold") if k in scheduler}
        )
    check_int("model.sample_tokens", cfg.model.sample_tokens, 0)
    check_number("model.sample_temperature", cfg.model.sample_temperature, 0, open_low=True)
    check_trainer(cfg.trainer)
    if cfg.get("checkpoint"):
        check_int("checkpoint.every_n_train_steps", cfg.checkpoint.every_n_train_steps, 1)
    if cfg.get("torch_threads") is not None:
        check_int("torch_threads", cfg.torch_threads, 1)
    check_bool("keep_freed_memory", cfg.get("keep_freed_memory", False))
    if cfg.get("optimized_metric") is not None:
        check_optimized_metric(cfg.optimized_metric)


def check_trainer(trainer: DictConfig) -> None:
    """The Trainer options a user sets most: device, stopping limits, clipping, logging."""
    check_gpu("trainer.accelerator", trainer.get("accelerator"))
    clip = trainer.get("gradient_clip_val")
    if clip is not None:
        check_number("trainer.gradient_clip_val", clip, 0)
    check_choice(
        "trainer.gradient_clip_algorithm", trainer.gradient_clip_algorithm, ("norm", "value")
    )
    for key, minimum in (
        ("max_epochs", -1),
        ("max_steps", -1),
        ("min_epochs", 0),
        ("min_steps", 0),
    ):
        if trainer.get(key) is not None:
            check_int(f"trainer.{key}", trainer[key], minimum)
    for split in ("train", "val", "test"):
        check_batch_limit(f"trainer.limit_{split}_batches", trainer.get(f"limit_{split}_batches"))
    check_int("trainer.log_every_n_steps", trainer.log_every_n_steps, 1)
    max_time = trainer.get("max_time")
    if max_time is not None and not re.fullmatch(r"\d+:\d\d:\d\d:\d\d", str(max_time)):
        raise UserError(
            "trainer.max_time must be DD:HH:MM:SS, e.g. 00:01:30:00 for 90 minutes, "
            f"got {max_time!r}."
        )


def check_batch_limit(name: str, value: Any) -> None:
    """Lightning's ``limit_*_batches``: null (all), a number of batches, or a fraction."""
    if value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
        return
    if isinstance(value, float) and 0.0 <= value <= 1.0:
        return
    raise UserError(
        f"{name} must be a number of batches (0, 1, 2, ...) or a fraction in [0.0, 1.0], "
        f"got {value!r}."
    )


def check_seed(seed: Any) -> None:
    check_int("seed", seed, 0)
    if seed > MAX_SEED:
        raise UserError(f"seed must be at most {MAX_SEED}, got {seed}.")


def check_optimized_metric(name: Any) -> tuple[str, str]:
    """``best_val/ppl`` as ``("best_val", "ppl")``: what a sweep minimises."""
    split, _, metric = str(name).partition("/")
    if split not in METRIC_SPLITS or metric not in METRICS:
        raise UserError(
            f"optimized_metric must be <split>/<metric> with split one of "
            f"{', '.join(METRIC_SPLITS)} and metric one of {', '.join(METRICS)}, got {name!r}."
        )
    return split, metric


def check_sample(cfg: DictConfig) -> None:
    """rnnlab-sample's options."""
    check_int("num_tokens", cfg.num_tokens, 0)
    check_int("num_samples", cfg.num_samples, 1)
    check_number("temperature", cfg.temperature, 0, open_low=True)
    if cfg.top_k is not None:
        check_int("top_k", cfg.top_k, 1)
    check_bool("greedy", cfg.greedy)
    check_seed(cfg.seed)
    check_option("unknown", cfg.unknown, ("error", "unk"))
    check_checkpoint_options(cfg)


def check_inspect(cfg: DictConfig) -> None:
    """rnnlab-inspect's options (the layer and units against the model: in the command)."""
    if not isinstance(cfg.text, str):
        raise UserError(f"text must be a string or a file's path, got {cfg.text!r}.")
    check_int("layer", cfg.layer, -1)
    units = cfg.units
    if units is not None and (isinstance(units, int) or not all(isinstance(u, int) for u in units)):
        raise UserError(f"units must be a list of unit ids like [3,17], got {cfg.units!r}.")
    check_option("unknown", cfg.unknown, ("error", "unk"))
    check_checkpoint_options(cfg)


def check_eval(cfg: DictConfig) -> None:
    """rnnlab-eval's options."""
    check_option("split", cfg.split, ("val", "test"))
    check_checkpoint_options(cfg)


def check_checkpoint_options(cfg: DictConfig) -> None:
    """What rnnlab-sample and rnnlab-eval share: the backend to run on and the device."""
    if cfg.backend is not None:
        check_option("backend", cfg.backend, BACKENDS)
    check_option("device", cfg.device, DEVICES)
    check_gpu("device", cfg.device)


def check_gpu(name: str, device: Any) -> None:
    """A GPU asked for where there is none: one sentence, not Lightning's traceback."""
    if device in ("gpu", "cuda") and not torch.cuda.is_available():
        raise UserError(f"{name}={device} but this machine has no GPU; use {name}=cpu (or auto).")


def check_option(name: str, value: Any, choices: tuple[str, ...]) -> None:
    """A top-level option of rnnlab-sample or rnnlab-eval, named as it is typed."""
    if value not in choices:
        raise UserError(f"{name}={value!r} is not a choice; use one of: {', '.join(choices)}.")
