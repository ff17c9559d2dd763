"""Shared fixtures and helpers: a small corpus, composed configs, the entry points run
in-process or, where a separate process is what a test is about, as a subprocess."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict

from rnnlab.cli.app import compose_config, config_dir
from rnnlab.cli.train import train
from rnnlab.nn.cores import CORES

CONFIG_DIR = Path(config_dir())
#: every (cell, backend) that exists: the cells linear in their state are rnnlab's only
CELL_BACKENDS = [(cell, backend) for cell, cores in CORES.items() for backend in cores]
#: the cells PyTorch has too (and with them a W_hh)
CLASSIC_CELLS = tuple(cell for cell, cores in CORES.items() if "builtin" in cores)
REPO = Path(__file__).resolve().parents[1]

if os.environ.get("PYTEST_XDIST_WORKER"):  # make test: two workers share the cores, a thread each
    torch.set_num_threads(1)

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


#: A run small enough for a test: about a second on 2 cores.
TINY_RUN = (
    "model.hidden_size=32",
    "data.batch_size=4",
    "data.seq_len=16",
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=30",
    "model.sample_tokens=20",
    "trainer.log_every_n_steps=5",
)


@dataclass(frozen=True)
class Result:
    """What an entry point left: its exit status and what it printed."""

    code: int
    out: str
    err: str


def one_sentence(result: Result | subprocess.CompletedProcess[str]) -> str:
    """The sentence a user mistake ends in, asserting how it ends: exit status 1, no
    traceback anywhere, and exactly one ``error: ...`` line, the last on stderr."""
    code = result.code if isinstance(result, Result) else result.returncode
    out, err = (
        (result.out, result.err) if isinstance(result, Result) else (result.stdout, result.stderr)
    )
    assert code == 1, f"exit status {code}: {err[-2000:]}"
    assert "Traceback" not in out + err
    lines = err.strip().splitlines()
    assert lines and lines[-1].startswith("error: "), err[-2000:]
    assert [line for line in lines if line.startswith("error: ")] == [lines[-1]]
    return lines[-1].removeprefix("error: ")


def invoke(entry: str, *args: str) -> int:
    """An entry point run in this process as its console script would run it (argv, Hydra,
    exit status); returns the exit status."""
    main = importlib.import_module(f"rnnlab.cli.{entry}").main
    GlobalHydra.instance().clear()
    try:
        if entry == "compare":
            main(list(args))
        else:
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(sys, "argv", [f"rnnlab-{entry}", *args])
                main()
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    return 0


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., Result]:
    """``cli("train", *args)``: :func:`invoke`, with what it printed."""

    def run(entry: str, *args: str) -> Result:
        capsys.readouterr()
        code = invoke(entry, *args)
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


def run_cli(
    entry: str, *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: int = 300
) -> subprocess.CompletedProcess[str]:
    """``python -m rnnlab.cli.<entry> args`` in a process of its own, in ``cwd``."""
    full_env = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", f"rnnlab.cli.{entry}", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def compose_train(
    overrides: Sequence[str] = (), output_dir: Path | None = None, name: str = "train"
) -> DictConfig:
    """A config (train by default) as a Hydra job sees it, with ${hydra:...} resolvable."""
    cfg = compose_config(name, overrides, output_dir)
    if output_dir is not None:  # the run's token cache stays out of the repository too
        with open_dict(cfg):
            cfg.paths.data_dir = str(output_dir / "data")
    return cfg


def quiet_trainer(**kwargs: object) -> L.Trainer:
    """A Trainer that writes and prints nothing, for tests that drive the module directly."""
    return L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,
        **kwargs,
    )


@pytest.fixture
def tiny_corpus(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.txt"
    path.write_text(TINY_TEXT, encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run directory of one tiny training, shared by the tests that read it."""
    root = tmp_path_factory.mktemp("trained")
    (root / "tiny.txt").write_text(TINY_TEXT, encoding="utf-8")
    cfg = compose_train([f"data.path={root / 'tiny.txt'}", *TINY_RUN], output_dir=root / "run")
    train(cfg)
    return root / "run"
