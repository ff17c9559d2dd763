"""Shared fixtures: a small corpus written by the test, Hydra composition, a CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
from omegaconf import DictConfig, open_dict

from rnnlab import compose_config, config_dir

CONFIG_DIR = Path(config_dir())

#: A few hundred lines of varied English so that a tiny model has something to learn.
TINY_TEXT = "".join(
    f"line {i}: the {adj} {noun} {verb} over the lazy dog, {i % 7} times.\n"
    for i, (adj, noun, verb) in enumerate(
        (a, n, v)
        for a in ("quick", "slow", "red", "blue", "brave")
        for n in ("fox", "cat", "bird", "fish")
        for v in ("jumps", "runs", "flies", "swims", "walks")
    )
)


#: A run small enough for a test: a few seconds on 2 cores.
TINY_RUN = (
    "model.hidden_size=32",
    "data.batch_size=4",
    "data.seq_len=16",
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=30",
    "model.sample_tokens=20",
    "trainer.log_every_n_steps=5",
)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run directory of one tiny training through the CLI, shared by the tests that read it."""
    root = tmp_path_factory.mktemp("trained")
    (root / "tiny.txt").write_text(TINY_TEXT, encoding="utf-8")
    result = run_cli(
        "train",
        f"data.path={root / 'tiny.txt'}",
        f"hydra.run.dir={root / 'run'}",
        *TINY_RUN,
        cwd=root,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return root / "run"


@pytest.fixture
def tiny_corpus(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.txt"
    path.write_text(TINY_TEXT, encoding="utf-8")
    return path


def compose_train(
    overrides: Sequence[str] = (), output_dir: Path | None = None, name: str = "train"
) -> DictConfig:
    """A config (train by default) as a Hydra job sees it, with ${hydra:...} resolvable."""
    cfg = compose_config(name, overrides, output_dir)
    if output_dir is not None:  # the run's token cache stays out of the repository too
        with open_dict(cfg):
            cfg.paths.data_dir = str(output_dir / "data")
    return cfg


def run_cli(
    module: str, *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: int = 300
) -> subprocess.CompletedProcess[str]:
    """``python -m rnnlab.<module> args`` in ``cwd``, as a user would run it."""
    full_env = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", f"rnnlab.{module}", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
