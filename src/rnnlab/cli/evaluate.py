"""``rnnlab-eval ckpt_path=... data.path=...`` (or ``python -m rnnlab.cli.evaluate``).

Evaluates a checkpoint on any corpus with the checkpoint's own vocabulary (tokens
outside it become ``<unk>`` and are counted), through the same Lightning test loop
as training, so the run's own test split gives the numbers in its metrics.json.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import rich
import rich.table
from omegaconf import DictConfig

from rnnlab.atomic import write_text_atomically
from rnnlab.cli.app import config_dir, exit_on_user_error
from rnnlab.cli.checks import check_eval
from rnnlab.data.datamodule import LMDataModule
from rnnlab.training.module import RNNLMModule


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Loss, ppl (and bpc) of ``cfg.split``, the token count and how many became ``<unk>``."""
    check_eval(cfg)
    module = RNNLMModule.from_checkpoint(cfg.ckpt_path, cfg.backend)
    datamodule: LMDataModule = hydra.utils.instantiate(cfg.data)
    datamodule.vocab = module.vocab
    datamodule.prepare_data()
    datamodule.setup("test")
    trainer = L.Trainer(
        accelerator=cfg.device,
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
    )
    run = trainer.test if cfg.split == "test" else trainer.validate
    run(module, datamodule=datamodule, verbose=False)
    return {
        "ckpt_path": str(cfg.ckpt_path),
        "split": cfg.split,
        "backend": module.net.backend,
        **module.final_metrics()[cfg.split],
        "tokens": datamodule.num_tokens(cfg.split),
        "unknown_tokens": datamodule.unknown[cfg.split],
    }


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="eval")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    result = evaluate(cfg)
    write_text_atomically(
        Path(cfg.paths.output_dir) / "metrics.json", json.dumps(result, indent=2) + "\n"
    )
    table = rich.table.Table(title=f"{cfg.split} of {cfg.ckpt_path}")
    for key in ("loss", "ppl", "bpc", "tokens", "unknown_tokens"):
        if key in result:
            table.add_row(
                key, f"{result[key]:.4f}" if isinstance(result[key], float) else str(result[key])
            )
    rich.print(table)


if __name__ == "__main__":
    main()
