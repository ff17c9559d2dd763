"""Run directories as data: what a run left behind, read back for summaries and reports.

A run directory (``logs/train/runs/<stamp>`` or one job of a sweep) holds
``config.yaml`` from its start, ``metrics.json`` once it finished, ``error.txt`` if
it failed, and TensorBoard event files under ``tensorboard/``. The sweep summary and
``rnnlab-compare`` read runs through these functions only, so a run still going or
one that failed is reported the same way by both.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

from rnnlab.errors import UserError

#: The hyperparameters every table shows, whether they vary or not, by the config key each
#: stands for (metrics.json's ``hparams`` names them alike, for a run without config.yaml).
SHOWN = {
    "arch": "model.arch",
    "cell": "model.cell",
    "backend": "model.backend",
    "hidden_size": "model.hidden_size",
    "seq_len": "data.seq_len",
    "lr": "model.optimizer.lr",
    "seed": "seed",
}

#: Files that make a directory a run (a sweep directory has none of them itself).
RUN_MARKERS = ("config.yaml", "metrics.json", "error.txt", ".hydra")

#: What a finished run's metrics.json holds that the tables read: objects, then numbers.
METRICS_OBJECTS = ("hparams", "val", "best_val", "test")
METRICS_NUMBERS = ("tokens_per_sec", "wall_seconds", "num_params")

#: The top-level keys of an rnnlab-train config.yaml that the tables read.
CONFIG_KEYS = ("model", "data", "seed")

#: Config keys (and everything under them) that never tell runs' settings apart: the two a
#: comparison is across, and where a run's files go or what it resumed from.
NOT_SETTINGS = ("seed", "model.backend", "paths", "ckpt_path", "resume", "task_name")


class UnreadableRun(Exception):
    """A run file that is not what rnnlab-train writes; the message says which and why."""


def is_run(path: Path) -> bool:
    return any((path / marker).exists() for marker in RUN_MARKERS)


def holds_runs(path: Path) -> bool:
    """Whether ``path`` is a directory with a run in it: a sweep with at least one job started."""
    return path.is_dir() and any(d.is_dir() and is_run(d) for d in path.iterdir())


def sweep_order(path: Path) -> tuple[int, str]:
    """Jobs by number (``2_...`` before ``10_...``), then by name; other runs after them."""
    number = re.match(r"\d+", path.name)
    return (int(number.group()) if number else 1 << 62, path.name)


def runs_in(path: Path) -> list[Path]:
    """``path`` if it is a run, else its job directories in sweep order."""
    if not path.is_dir():
        raise UserError(f"{path} is not a directory; pass a sweep directory or run directories.")
    if is_run(path):
        return [path]
    jobs = sorted((d for d in path.iterdir() if d.is_dir() and is_run(d)), key=sweep_order)
    if not jobs:
        raise UserError(
            f"{path} holds no rnnlab runs (no config.yaml or metrics.json in it or its "
            "subdirectories); pass a sweep directory or run directories."
        )
    return jobs


def find_runs(paths: list[Path]) -> list[Path]:
    """Run directories among ``paths``: each is a run, or a sweep whose job directories are.

    A run named twice (``sweep sweep/0``, or through a symlink) is listed once, so that
    it does not count twice in the means over seeds.
    """
    runs: list[Path] = []
    seen: set[Path] = set()
    for path in paths:
        for run in runs_in(path):
            if run.resolve() not in seen:
                seen.add(run.resolve())
                runs.append(run)
    return runs


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as one level of dotted keys; lists (and empty dicts) stay whole values."""
    if not isinstance(tree, dict) or not tree:
        return {prefix: tree} if prefix else {}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def run_settings(config: dict[str, Any]) -> dict[str, Any]:
    """Everything a run's resolved config sets, dotted, that could make its numbers differ.

    Left out: :data:`NOT_SETTINGS`, and every value naming the run's own directory
    (``trainer.default_root_dir``, a checkpoint ``dirpath``, a logger's ``save_dir``),
    which differs between any two runs without changing what they compute.
    """
    output_dir = str((config.get("paths") or {}).get("output_dir") or "")
    return {
        key: value
        for key, value in flatten(config).items()
        if not any(key == k or key.startswith(f"{k}.") for k in NOT_SETTINGS)
        and not (output_dir and output_dir in str(value))
    }


def parse_file(path: Path, parse: Callable[[str], Any]) -> Any:
    """``parse`` of a run file's text; None if there is none, :class:`UnreadableRun` if it fails."""
    if not path.is_file():
        return None
    text = ""
    try:
        text = path.read_text(encoding="utf-8")
        return parse(text)
    except (OSError, ValueError, yaml.YAMLError, OmegaConfBaseException) as exc:
        if not text.strip():
            reason = "it is empty (the run was killed while writing it?)"
        else:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnreadableRun(f"{path.name} cannot be read: {reason}") from exc


def read_config(run_dir: Path) -> dict[str, Any] | None:
    """The config a run saved at its start (None: none yet)."""
    config = parse_file(
        run_dir / "config.yaml", lambda text: OmegaConf.to_container(OmegaConf.create(text))
    )
    if config is None:
        return None
    missing = next(
        (k for k in CONFIG_KEYS if not isinstance(config, dict) or k not in config), None
    )
    if missing:
        raise UnreadableRun(f"config.yaml is not an rnnlab-train config (it has no {missing!r})")
    return config


def read_metrics(run_dir: Path) -> dict[str, Any] | None:
    """A finished run's metrics.json (None if it has not finished)."""
    metrics = parse_file(run_dir / "metrics.json", json.loads)
    if metrics is None:
        return None
    if not isinstance(metrics, dict):
        raise UnreadableRun("metrics.json is not a JSON object, so it is not from rnnlab-train")
    missing = next((k for k in (*METRICS_OBJECTS, *METRICS_NUMBERS) if k not in metrics), None)
    if missing:
        raise UnreadableRun(
            f"metrics.json has no {missing!r}, so it is not from rnnlab-train "
            "(an rnnlab-eval output directory?)"
        )
    if not all(isinstance(metrics[key], dict) for key in METRICS_OBJECTS):
        raise UnreadableRun("metrics.json is not laid out as rnnlab-train writes it")
    return metrics


def read_run(run_dir: Path) -> dict[str, Any]:
    """Status, shown hyperparameters, settings and final metrics of one run, as far as it got.

    A file that is not what rnnlab-train writes (empty, half-written, from rnnlab-eval,
    another program's config) makes the run ``unreadable`` with a one-line reason, so
    one odd directory never stops the summary or report of all the others.
    """
    run: dict[str, Any] = {
        "path": run_dir,
        "run": run_dir.name,
        "overrides": [],
        "shown": {},
        "settings": {},
        "metrics": None,
    }
    try:
        outcome = read_run_files(run_dir, run)
    except UnreadableRun as exc:
        return {**run, "status": "unreadable", "error": str(exc)}
    return {**run, **outcome}


def shown(values: dict[str, Any]) -> dict[str, Any]:
    """The shown settings, a run from before ``model.arch`` existed being a stack."""
    return {**values, "arch": values.get("arch") or "stack"}


def read_run_files(run_dir: Path, run: dict[str, Any]) -> dict[str, Any]:
    """:func:`read_run`'s work; fills ``run`` as it goes: an unreadable run keeps what was read."""
    run["overrides"] = parse_file(run_dir / ".hydra/overrides.yaml", yaml.safe_load) or []
    config = read_config(run_dir)
    if config is not None:
        flat = flatten(config)
        run["shown"] = shown({name: flat.get(key) for name, key in SHOWN.items()})
        run["settings"] = run_settings(config)
    error = parse_file(run_dir / "error.txt", str.strip)
    if error is not None:
        return {"status": "failed", "error": error}
    metrics = read_metrics(run_dir)
    if metrics is None:
        return {"status": "running or killed"}
    if config is None:  # no config.yaml: its recorded hyperparameters are all there is
        hparams = metrics["hparams"]
        run["shown"] = shown({name: hparams.get(name) for name in SHOWN})
        run["settings"] = {k: v for k, v in hparams.items() if k not in ("backend", "seed")}
    return {"status": "done", "metrics": metrics}


def read_curves(run_dir: Path) -> dict[str, list[tuple[int, float, float]]]:
    """Every scalar a run logged to TensorBoard: tag -> [(step, wall time, value)]."""
    events_dir = run_dir / "tensorboard"
    if not events_dir.is_dir():
        return {}
    logging.getLogger("tensorboard").setLevel(logging.WARNING)  # one INFO line per event file
    accumulator = EventAccumulator(str(events_dir), size_guidance={SCALARS: 0})
    accumulator.Reload()
    return {
        tag: [(e.step, e.wall_time, e.value) for e in accumulator.Scalars(tag)]
        for tag in accumulator.Tags()[SCALARS]
    }
