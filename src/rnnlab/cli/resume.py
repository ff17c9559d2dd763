"""``rnnlab-train resume=<run dir>``: the saved config of a run, to go on in its own directory.

The run goes on exactly as it was configured (only its stopping limits may change),
from its ``last.ckpt``, writing where the run directory is now: a run copied or moved
since it was saved writes into its new place, never into the old one. A config saved
by an older layout of rnnlab is brought up to date first (:mod:`rnnlab.cli.legacy`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from rnnlab.cli.legacy import upgraded
from rnnlab.errors import UserError

#: what ``resume=`` may change in a run's saved config: when it stops
STOPPING_LIMITS = ("trainer.max_epochs", "trainer.max_steps", "trainer.max_time")


def resumed_config(cfg: DictConfig) -> DictConfig:
    """The saved config of the run ``cfg.resume``, its stopping limits as given now."""
    run_dir = Path(cfg.resume).expanduser()
    if not (run_dir / "config.yaml").is_file():
        raise UserError(
            f"resume={run_dir} is not a run to resume: it needs config.yaml (and a checkpoint); "
            "pass a run directory such as logs/train/runs/<stamp>."
        )
    given = {o.split("=", 1)[0].lstrip("+~") for o in HydraConfig.get().overrides.task}
    changed = sorted(given - {"resume", *STOPPING_LIMITS})
    if changed:
        raise UserError(
            f"resume= goes on with the run's saved config; only {', '.join(STOPPING_LIMITS)} "
            f"may be given with it, not {', '.join(changed)}."
        )
    saved = OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml"))
    saved = OmegaConf.create(relocated(upgraded(saved), run_dir))  # type: ignore[arg-type]
    for key in given & set(STOPPING_LIMITS):
        OmegaConf.update(saved, key, OmegaConf.select(cfg, key))
    saved.resume, saved.ckpt_path = str(run_dir), str(last_checkpoint(saved, run_dir))
    return saved


def relocated(config: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """``config`` with every path inside its run's old directory moved to ``run_dir``."""
    old, new = str(config["paths"]["output_dir"]), os.path.abspath(run_dir)

    def move(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: move(v) for k, v in value.items()}
        if isinstance(value, list):
            return [move(v) for v in value]
        if isinstance(value, str) and (value == old or value.startswith(old + os.sep)):
            return new + value[len(old) :]
        return value

    return config if old == new else move(config)


def last_checkpoint(saved: DictConfig, run_dir: Path) -> Path:
    """The run's ``last.ckpt``, or one sentence saying why there is none."""
    if not saved.get("checkpoint"):
        raise UserError(
            f"resume={run_dir} cannot go on: that run was trained with checkpoint=none, so it "
            "saved no checkpoint; train it again with checkpoints on."
        )
    last = Path(saved.checkpoint.dirpath) / "last.ckpt"
    if not last.is_file():
        raise UserError(
            f"resume={run_dir} cannot go on: {last} does not exist (the run stopped before "
            "its first checkpoint); start it again."
        )
    return last
