"""Run directories as data: what a run left behind, read back for summaries and reports.

A run directory (``logs/train/runs/<stamp>`` or one job of a sweep) holds
``config.yaml`` from its start, ``metrics.json`` once it finished, ``error.txt`` if
it failed on a user mistake, and TensorBoard event files under ``tensorboard/``.
The sweep summary and ``rnnlab-compare`` read runs through these functions only, so
a run still going or one that failed is reported the same way by both.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from rnnlab.errors import UserError

#: The hyperparameters every table shows, whether they vary or not.
KEY_HPARAMS = ("backend", "hidden_size", "seq_len", "lr", "seed")

#: One row per run: its identity, what it was, and the numbers it ended with.
RUN_COLUMNS = (
    "run",
    "status",
    "overrides",
    *KEY_HPARAMS,
    "val_ppl",
    "best_val_ppl",
    "val_bpc",
    "test_ppl",
    "tokens_per_sec",
    "wall_seconds",
    "num_params",
    "error",
)

#: Files that make a directory a run (a sweep directory has none of them itself).
RUN_MARKERS = ("config.yaml", "metrics.json", "error.txt", ".hydra")

#: What a finished run's metrics.json holds that the tables read: objects, then numbers.
METRICS_OBJECTS = ("hparams", "val", "best_val", "test")
METRICS_NUMBERS = ("tokens_per_sec", "wall_seconds", "num_params")

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


def runs_in(path: Path) -> list[Path]:
    """``path`` if it is a run, else its job directories in sweep order."""
    if not path.is_dir():
        raise UserError(f"{path} is not a directory; pass a sweep directory or run directories.")
    if is_run(path):
        return [path]
    jobs = sorted(
        (d for d in path.iterdir() if d.is_dir() and is_run(d)),
        key=lambda d: (len(d.name), d.name),  # sweep jobs 0, 1, ..., 10 in order
    )
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


def run_hparams(config: dict[str, Any]) -> dict[str, Any]:
    """The hyperparameters a sweep varies, flat, from a run's resolved config."""
    model, data = config["model"], config["data"]
    return {
        "backend": model["backend"],
        "level": data["level"],
        "hidden_size": model["hidden_size"],
        "num_layers": model["num_layers"],
        "seq_len": data["seq_len"],
        "batch_size": data["batch_size"],
        "lr": model["optimizer"]["lr"],
        "optimizer": model["optimizer"]["_target_"].rsplit(".", 1)[-1],
        "dropout": model["dropout"],
        "nonlinearity": model["nonlinearity"],
        "embedding_dim": model["embedding_dim"] or model["hidden_size"],
        "tie_weights": model["tie_weights"],
        "output": model.get("output", "softmax"),  # runs from before model.output existed
        "bptt": model["bptt"],
        "seed": config["seed"],
    }


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


def read_config(run_dir: Path) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """Hyperparameters and settings from the config a run saved at its start (None: none yet)."""
    config = parse_file(
        run_dir / "config.yaml", lambda text: OmegaConf.to_container(OmegaConf.create(text))
    )
    if config is None:
        return None
    try:
        return run_hparams(config), run_settings(config)
    except (KeyError, TypeError, AttributeError) as exc:
        missing = f" (it has no {exc.args[0]!r})" if isinstance(exc, KeyError) else ""
        raise UnreadableRun(f"config.yaml is not an rnnlab-train config{missing}") from exc


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
    """Status, hyperparameters, settings and final metrics of one run, as far as it got.

    A file that is not what rnnlab-train writes (empty, half-written, from rnnlab-eval,
    another program's config) makes the run ``unreadable`` with a one-line reason, so
    one odd directory never stops the summary or report of all the others.
    """
    run: dict[str, Any] = {
        "path": run_dir,
        "run": run_dir.name,
        "overrides": [],
        "hparams": {},
        "settings": {},
        "metrics": None,
    }
    try:
        outcome = read_run_files(run_dir, run)
    except UnreadableRun as exc:
        return {**run, "status": "unreadable", "error": str(exc)}
    return {**run, **outcome}


def read_run_files(run_dir: Path, run: dict[str, Any]) -> dict[str, Any]:
    """:func:`read_run`'s work; fills ``run`` as it goes: an unreadable run keeps what was read."""
    run["overrides"] = parse_file(run_dir / ".hydra/overrides.yaml", yaml.safe_load) or []
    config = read_config(run_dir)
    if config is not None:
        run["hparams"], run["settings"] = config
    error = parse_file(run_dir / "error.txt", str.strip)
    if error is not None:
        return {"status": "failed", "error": error}
    metrics = read_metrics(run_dir)
    if metrics is None:
        return {"status": "running or killed"}
    if config is None:  # no config.yaml: its hyperparameters are all there is to group on
        hparams = metrics["hparams"]
        run["settings"] = {k: v for k, v in hparams.items() if k not in ("backend", "seed")}
    return {"status": "done", "hparams": metrics["hparams"], "metrics": metrics}


def run_rows(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Table rows of runs read by :func:`read_run`; overrides that all of them share dropped."""
    shared = set.intersection(*(set(run["overrides"]) for run in runs)) if len(runs) > 1 else set()
    return [
        {**run_row(run), "overrides": " ".join(o for o in run["overrides"] if o not in shared)}
        for run in runs
    ]


def run_row(run: dict[str, Any]) -> dict[str, Any]:
    """The :data:`RUN_COLUMNS` of a run read by :func:`read_run` (missing numbers left out)."""
    row = {key: run.get(key) for key in ("run", "status", "overrides", "error")}
    row.update({key: run["hparams"].get(key) for key in KEY_HPARAMS})
    metrics = run["metrics"]
    if metrics:
        row.update(
            val_ppl=metrics["val"].get("ppl"),
            best_val_ppl=metrics["best_val"].get("ppl"),
            val_bpc=metrics["val"].get("bpc"),
            test_ppl=metrics["test"].get("ppl"),
            tokens_per_sec=metrics["tokens_per_sec"],
            wall_seconds=metrics["wall_seconds"],
            num_params=metrics["num_params"],
        )
    return row


def cell(value: Any) -> str:
    """A table cell: 4 significant digits (whole numbers from 1000 up), empty if missing."""
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    return "" if value is None else str(value)


def csv_text(columns: tuple[str, ...], rows: list[dict[str, Any]]) -> str:
    """CSV at full precision (tables for people round; files for programs do not)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def markdown_table(columns: tuple[str, ...], rows: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += [
        "| " + " | ".join(cell(row.get(k)).replace("|", "\\|") for k in columns) + " |"
        for row in rows
    ]
    return "\n".join(lines) + "\n"
