"""What the Hydra entry points share: the config directory, composition, resolvers, the exit.

- :func:`config_dir`: ``configs/`` at the top of a checkout, or inside an installed wheel.
- Resolvers for ``configs/hydra/default.yaml``: where a run (or a resumed one) and each
  job of a sweep write. They are registered when this module is imported, before
  anything composes, and only then: ``import rnnlab`` registers nothing.
- :func:`exit_on_user_error`: a :class:`~rnnlab.errors.UserError`, however wrapped, becomes
  one line on stderr and exit status 1 (in a sweep: the job's ``error.txt``, and the
  sweep goes on).
"""

from __future__ import annotations

import functools
import math
import re
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import hydra
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

from rnnlab.errors import UserError

F = TypeVar("F", bound=Callable[..., Any])

#: a job directory's name stays well below the 255 bytes most file systems allow
JOB_DIR_CHARS = 150
#: what a job directory's name may not hold: a path separator, or what Hydra's override
#: grammar reads as syntax in an unquoted value
UNSAFE_IN_OVERRIDES = re.compile(r"[^A-Za-z0-9_.+\-@%]")


def config_dir() -> str:
    """Hydra's configs/: inside an installed wheel, else at the top of the checkout."""
    package = Path(__file__).resolve().parents[1]
    packaged = package / "configs"
    return str(packaged if packaged.is_dir() else package.parents[1] / "configs")


def compose_config(
    name: str = "train", overrides: Sequence[str] = (), output_dir: str | Path | None = None
) -> DictConfig:
    """A config as a Hydra job sees it, for code outside ``@hydra.main`` (tests, benchmarks).

    ``${hydra:...}`` stays resolvable; Hydra's own node is dropped, as in a real run.
    """
    GlobalHydra.instance().clear()
    with hydra.initialize_config_dir(version_base="1.3", config_dir=config_dir()):
        cfg = hydra.compose(name, overrides=list(overrides), return_hydra_config=True)
    HydraConfig().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
        if output_dir is not None:
            cfg.paths.output_dir = str(output_dir)
    return cfg


def instantiate_all(group: DictConfig | None) -> list[Any]:
    """Every ``_target_`` entry of a group such as callbacks or logger (null entries skipped)."""
    return [hydra.utils.instantiate(c) for c in (group or {}).values() if c and "_target_" in c]


def run_dir(resume: str | None, fresh: str) -> str:
    """Hydra's run directory: ``resume=<run dir>`` goes on in that run's own directory."""
    return resume or fresh


def hydra_subdir(resume: str | None) -> str:
    """Where Hydra keeps its record of an invocation; a resume keeps the original's."""
    return f".hydra/resumed-{datetime.now():%Y-%m-%d_%H-%M-%S}" if resume else ".hydra"


def job_dir(num: int, overrides: str) -> str:
    """A sweep job's directory, and so its TensorBoard run: ``3_model.backend-custom+...``.

    The number first keeps the jobs in order; ``overrides`` is Hydra's ``override_dirname``,
    joined by ``-`` and ``+`` (configs/hydra/default.yaml), from which that file leaves out
    paths. Anything else that Hydra's grammar would read as syntax (``=``, ``,``,
    brackets, quotes, spaces) becomes ``_``, so that the path, as printed, can be typed
    back on the command line: ``rnnlab-sample ckpt_path=<job>/checkpoints/last.ckpt``.
    """
    name = UNSAFE_IN_OVERRIDES.sub("_", overrides)
    if len(name) > JOB_DIR_CHARS:
        name = name[: JOB_DIR_CHARS - 3] + "..."
    return f"{num}_{name}" if name else str(num)


OmegaConf.register_new_resolver("rnnlab.run_dir", run_dir, replace=True)
OmegaConf.register_new_resolver("rnnlab.hydra_subdir", hydra_subdir, replace=True)
OmegaConf.register_new_resolver("rnnlab.job_dir", job_dir, replace=True)


def find_user_error(exc: BaseException) -> UserError | None:
    """The UserError behind ``exc``, if any (Hydra's instantiate wraps exceptions)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, UserError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def in_multirun() -> bool:
    """Whether this Hydra job is one of a sweep's (where one bad job must not end the rest)."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def exit_on_user_error(fn: F) -> F:
    """Run ``fn``; turn a UserError (however wrapped) into one line on stderr and exit 1.

    In a sweep the job instead writes the sentence to its ``error.txt`` (for the
    sweep summary) and returns ``inf``, the worst value a sweeper can see, and the
    sweep goes on.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            user_error = find_user_error(exc)
            if user_error is None:
                raise
            print(f"error: {user_error}", file=sys.stderr)
            if in_multirun():
                job = Path(HydraConfig.get().runtime.output_dir)
                (job / "error.txt").write_text(f"{user_error}\n")
                return math.inf
            sys.exit(1)

    return wrapper  # type: ignore[return-value]
