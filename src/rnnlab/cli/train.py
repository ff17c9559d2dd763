"""``rnnlab-train [overrides]`` (or ``python -m rnnlab.cli.train``): one run, or a sweep of them.

Checks the config, builds the data, model, callbacks, loggers and trainer from it,
trains, tests the best checkpoint, prints the final metrics and a sample, and writes
``metrics.json`` into the run directory.
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import rich
import rich.panel
import rich.syntax
import rich.table
import rich.text
import rich.tree
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from rnnlab.atomic import write_text_atomically
from rnnlab.cli.allocator import keep_freed_memory
from rnnlab.cli.app import config_dir, exit_on_user_error, instantiate_all
from rnnlab.cli.checks import check_optimized_metric, check_train
from rnnlab.cli.resume import resumed_config
from rnnlab.data.datamodule import LMDataModule
from rnnlab.nn.lm import ADAPTIVE_FROM, ModelConfig
from rnnlab.training.callbacks.finite import FiniteGuard
from rnnlab.training.callbacks.random_state import RandomStateCheckpoint
from rnnlab.training.callbacks.throughput import Throughput
from rnnlab.training.checkpoint import check_vocab
from rnnlab.training.module import RNNLMModule
from rnnlab.training.peak_memory import peak_memory_mb, reset_peak_memory
from rnnlab.training.record import SPLITS, log_hparams, run_record

# Lightning's own use of a deprecated torch API; nothing a user can act on.
warnings.filterwarnings("ignore", message=".*LeafSpec.*")


def print_config_tree(cfg: DictConfig) -> None:
    """The resolved config, one branch per config group."""
    tree = rich.tree.Tree("config", guide_style="dim")
    for key, value in cfg.items():
        text = (
            OmegaConf.to_yaml(value, resolve=True) if isinstance(value, DictConfig) else str(value)
        )
        tree.add(str(key)).add(rich.syntax.Syntax(text, "yaml"))
    rich.print(tree)


def print_final_metrics(record: dict[str, Any], sample: str) -> None:
    """Final val/test numbers and a sample, for the terminal."""
    table = rich.table.Table(title="final metrics")
    for column in ("split", "loss (nats/token)", "ppl", "bpc"):
        table.add_column(column, justify="right")
    for split in SPLITS:
        values = record[split]
        if values:
            table.add_row(
                split, *(f"{values[k]:.4f}" if k in values else "-" for k in ("loss", "ppl", "bpc"))
            )
    rich.print(table)
    rich.print(
        f"{record['tokens_per_sec']:,.0f} tokens/s over {record['train_seconds']:.1f} s "
        f"of training; {record['num_params']:,} parameters"
    )
    rich.print(rich.panel.Panel(rich.text.Text(sample), title="sample"))


def print_auto_output(output: str, vocab_size: int) -> None:
    """What ``model.output=auto`` chose, and why, before training starts."""
    rich.print(
        f"model.output=auto: the {'adaptive' if output == 'adaptive' else 'full'} softmax for "
        f"{vocab_size:,} types (adaptive from {ADAPTIVE_FROM:,})"
    )


def validates(trainer: DictConfig) -> bool:
    """Whether the run validates at all (``trainer.limit_val_batches=0`` turns it off)."""
    return trainer.get("limit_val_batches") != 0


def callbacks(cfg: DictConfig, throughput: Throughput) -> list[Callback]:
    """What every run gets (throughput, NaN/inf guard, RNG state, checkpoints), then ``callbacks``.

    Without validation, the callbacks that watch a val metric (early stopping, the best
    checkpoint) step aside, and one line says so.
    """
    validating = validates(cfg.trainer)
    chosen = instantiate_all(cfg.get("callbacks"))
    if not validating:
        chosen = [c for c in chosen if not str(getattr(c, "monitor", "")).startswith("val/")]
        if rank_zero_only.rank == 0:
            rich.get_console().print(
                "[yellow]no validation (trainer.limit_val_batches=0): early stopping and the best "
                "checkpoint step aside; the test runs on the last weights.[/yellow]",
                soft_wrap=True,
            )
    always = [throughput, FiniteGuard(), RandomStateCheckpoint()]
    if cfg.get("checkpoint"):
        always += hydra.utils.instantiate(cfg.checkpoint, validating=validating)
    return always + chosen


def lm_module(group: DictConfig, model: ModelConfig, vocab: dict[str, Any]) -> RNNLMModule:
    """The LightningModule of the ``model`` group: the settings built once (``model``), and
    the optimizer, the schedule and the samples the group configures around them."""
    return RNNLMModule(
        vocab,
        model,
        optimizer=hydra.utils.instantiate(group.optimizer, _convert_="all"),
        scheduler=hydra.utils.instantiate(group.get("scheduler"), _convert_="all"),
        sample_tokens=group.sample_tokens,
        sample_temperature=group.sample_temperature,
    )


def build(
    cfg: DictConfig, model: ModelConfig
) -> tuple[LMDataModule, RNNLMModule, L.Trainer, Throughput]:
    """Data (tokenized), model, trainer and the throughput counter of a checked config."""
    datamodule: LMDataModule = hydra.utils.instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    # The vocabulary goes in as plain data: merged into the config, OmegaConf would wrap
    # each of its tokens in a node (9 s for WikiText-2's 33,278).
    module = lm_module(cfg.model, model, datamodule.vocab.to_dict())
    throughput = Throughput()
    loggers = instantiate_all(cfg.get("logger"))
    trainer: L.Trainer = hydra.utils.instantiate(
        cfg.trainer,
        callbacks=callbacks(cfg, throughput),
        logger=loggers or False,
        enable_checkpointing=bool(cfg.get("checkpoint")),
    )
    return datamodule, module, trainer, throughput


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train, test and report one run; returns what metrics.json holds."""
    out = Path(cfg.paths.output_dir)
    if rank_zero_only.rank == 0:  # DDP starts this function once per process
        print_config_tree(cfg)
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomically(out / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    # the one place the settings are built; attention samples over the training window
    model = ModelConfig.from_settings(cfg.model).for_window(cfg.data.seq_len)
    check_train(cfg)
    if cfg.get("torch_threads"):  # parallel jobs on one machine must not oversubscribe its cores
        torch.set_num_threads(cfg.torch_threads)
    if cfg.get("keep_freed_memory"):
        keep_freed_memory()
    L.seed_everything(cfg.seed, workers=True)
    datamodule, module, trainer, throughput = build(cfg, model)
    if model.output == "auto" and rank_zero_only.rank == 0:
        print_auto_output(module.net.config.output, module.net.vocab_size)
    if cfg.get("ckpt_path"):
        check_vocab(cfg.ckpt_path, datamodule.vocab)
    start, start_mb = time.perf_counter(), reset_peak_memory()
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"), weights_only=True)
    wall_seconds = time.perf_counter() - start
    memory = {"rss_start_mb": start_mb, "peak_rss_mb": peak_memory_mb()}
    if cfg.get("test") and datamodule.has_split("test"):  # a 90/10 split has no test text
        checkpoint = trainer.checkpoint_callback
        best = checkpoint.best_model_path if isinstance(checkpoint, ModelCheckpoint) else ""
        trainer.test(
            module, datamodule=datamodule, ckpt_path=best or None, verbose=False, weights_only=True
        )
    config = OmegaConf.to_container(cfg, resolve=True)
    record = run_record(module, throughput, trainer, wall_seconds, config, memory)  # type: ignore[arg-type]
    if trainer.is_global_zero:
        write_text_atomically(out / "metrics.json", json.dumps(record, indent=2) + "\n")
        log_hparams(trainer.loggers, record)
        print_final_metrics(record, module.sample(cfg.get("prompt", "")))
    return record


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="train")
@exit_on_user_error
def main(cfg: DictConfig) -> float | None:
    """The value a sweeper minimises: ``optimized_metric`` of the run's record."""
    record = train(resumed_config(cfg) if cfg.get("resume") else cfg)
    if cfg.get("optimized_metric") is None:
        return None
    split, metric = check_optimized_metric(cfg.optimized_metric)
    return record[split].get(metric)


if __name__ == "__main__":
    main()
