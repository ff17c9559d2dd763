"""Hydra entry point: ``rnnlab-train [overrides]`` or ``python -m rnnlab.train``.

Builds the data, model, callbacks, loggers and trainer from the config, trains,
tests the best checkpoint, prints the final metrics and a sample, and writes
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
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from rnnlab import config_dir
from rnnlab.atomic import write_text_atomically
from rnnlab.data.datamodule import LMDataModule
from rnnlab.data.vocab import Vocab
from rnnlab.errors import UserError, exit_on_user_error
from rnnlab.module import RNNLMModule, read_checkpoint
from rnnlab.runs import run_hparams

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


def instantiate_all(group: DictConfig | None) -> list[Any]:
    """Every ``_target_`` entry of a group such as callbacks or logger (null entries skipped)."""
    return [hydra.utils.instantiate(c) for c in (group or {}).values() if c and "_target_" in c]


def run_metrics(
    cfg: DictConfig, module: RNNLMModule, wall_seconds: float, trainer: L.Trainer
) -> dict[str, Any]:
    """Everything metrics.json records about a finished run (token counts over all ranks)."""
    world = trainer.world_size  # under DDP every rank trains as many tokens as this one
    return {
        **module.final_metrics(),
        "tokens_per_sec": module.tokens_per_sec * world,
        "train_tokens": module.train_tokens * world,
        "world_size": world,
        "train_seconds": module.train_seconds,
        "wall_seconds": wall_seconds,
        "torch_threads": torch.get_num_threads(),
        "steps": trainer.global_step,
        "epochs": trainer.current_epoch,
        "num_params": sum(p.numel() for p in module.parameters()),
        "vocab_size": len(module.vocab),
        "hparams": run_hparams(OmegaConf.to_container(cfg, resolve=True)),
    }


def report(metrics: dict[str, Any], sample: str) -> None:
    """Final val/test numbers and a sample, for the terminal."""
    table = rich.table.Table(title="final metrics")
    for column in ("split", "loss (nats/token)", "ppl", "bpc"):
        table.add_column(column, justify="right")
    for split in ("val", "best_val", "test"):
        values = metrics[split]
        if values:
            table.add_row(
                split, *(f"{values[k]:.4f}" if k in values else "-" for k in ("loss", "ppl", "bpc"))
            )
    rich.print(table)
    rich.print(
        f"{metrics['tokens_per_sec']:,.0f} tokens/s over {metrics['train_seconds']:.1f} s "
        f"of training; {metrics['num_params']:,} parameters"
    )
    rich.print(rich.panel.Panel(rich.text.Text(sample), title="sample"))


def log_hparams(loggers: list[Any], metrics: dict[str, Any]) -> None:
    """Hyperparameters with the final metrics, so TensorBoard's HParams tab compares runs."""
    finals = {
        f"hp/{split}_{k}": v
        for split in ("val", "best_val", "test")
        for k, v in metrics[split].items()
    }
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.log_hyperparams(metrics["hparams"], finals)
        else:
            logger.log_hyperparams(metrics["hparams"])
            logger.log_metrics(finals)
        logger.save()


#: what ``resume=`` may change in a run's saved config: when it stops
STOPPING_LIMITS = ("trainer.max_epochs", "trainer.max_steps", "trainer.max_time")


def resumed_config(cfg: DictConfig) -> DictConfig:
    """The saved config of the run ``cfg.resume``, its stopping limits as given now."""
    run_dir = Path(cfg.resume).expanduser()
    last = run_dir / "checkpoints" / "last.ckpt"
    if not (run_dir / "config.yaml").is_file() or not last.is_file():
        raise UserError(
            f"resume={run_dir} is not a run to resume: it needs config.yaml and "
            "checkpoints/last.ckpt; pass a run directory such as logs/train/runs/<stamp>."
        )
    given = {o.split("=", 1)[0].lstrip("+~") for o in HydraConfig.get().overrides.task}
    changed = sorted(given - {"resume", *STOPPING_LIMITS})
    if changed:
        raise UserError(
            f"resume= goes on with the run's saved config; only {', '.join(STOPPING_LIMITS)} "
            f"may be given with it, not {', '.join(changed)}."
        )
    saved = OmegaConf.load(run_dir / "config.yaml")
    for key in given & set(STOPPING_LIMITS):
        OmegaConf.update(saved, key, OmegaConf.select(cfg, key))
    saved.resume, saved.ckpt_path = str(run_dir), str(last)
    return saved  # type: ignore[return-value]


def check_resume(ckpt_path: str, vocab: Vocab) -> None:
    """Refuse to resume from a checkpoint trained on another vocabulary (naming both sizes)."""
    saved = Vocab.from_dict(read_checkpoint(ckpt_path)["hyper_parameters"]["vocab"])
    if saved != vocab:
        raise UserError(
            f"checkpoint {ckpt_path} was trained on a {saved.level}-level vocabulary of "
            f"{len(saved)} tokens, but this data gives a {vocab.level}-level one of {len(vocab)}; "
            "resume with the same data settings, or train from scratch."
        )


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train, test and report one run; returns what metrics.json holds."""
    out = Path(cfg.paths.output_dir)
    if rank_zero_only.rank == 0:  # DDP starts this function once per process
        print_config_tree(cfg)
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomically(out / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    if cfg.get("torch_threads"):  # parallel jobs on one machine must not oversubscribe its cores
        torch.set_num_threads(cfg.torch_threads)
    L.seed_everything(cfg.seed, workers=True)
    datamodule: LMDataModule = hydra.utils.instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    # The vocabulary joins after instantiation: merged into the config, OmegaConf would wrap
    # each of its tokens in a node (9 s for WikiText-2's 33,278).
    build_module = hydra.utils.instantiate(cfg.model, _convert_="all", _partial_=True)
    module: RNNLMModule = build_module(vocab=datamodule.vocab.to_dict())
    loggers = instantiate_all(cfg.get("logger"))
    trainer: L.Trainer = hydra.utils.instantiate(
        cfg.trainer, callbacks=instantiate_all(cfg.get("callbacks")), logger=loggers or False
    )
    if cfg.get("ckpt_path"):
        check_resume(cfg.ckpt_path, datamodule.vocab)
    start = time.perf_counter()
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"), weights_only=True)
    wall_seconds = time.perf_counter() - start
    if cfg.get("test") and datamodule.has_split("test"):  # a 90/10 split has no test text
        checkpoint = trainer.checkpoint_callback
        best = checkpoint.best_model_path if isinstance(checkpoint, ModelCheckpoint) else ""
        trainer.test(
            module, datamodule=datamodule, ckpt_path=best or None, verbose=False, weights_only=True
        )
    metrics = run_metrics(cfg, module, wall_seconds, trainer)
    if trainer.is_global_zero:
        write_text_atomically(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
        log_hparams(loggers, metrics)
        report(metrics, module.sample(cfg.get("prompt", "")))
    return metrics


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="train")
@exit_on_user_error
def main(cfg: DictConfig) -> float | None:
    metrics = train(resumed_config(cfg) if cfg.get("resume") else cfg)
    name = cfg.get("optimized_metric")
    return metrics["best_val"].get(name) if name else None


if __name__ == "__main__":
    main()
