"""rnnlab: recurrent language models with PyTorch Lightning and Hydra.

Compares PyTorch's ``torch.nn.RNN`` with a hand-written RNN (forward pass and
backpropagation through time) on the same data, training loop and metrics.
"""

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

__version__ = "0.1.0"


def config_dir() -> str:
    """Hydra's configs/: inside an installed wheel, else at the top of the checkout."""
    packaged = Path(__file__).parent / "configs"
    return str(packaged if packaged.is_dir() else Path(__file__).resolve().parents[2] / "configs")


def compose_config(
    name: str = "train", overrides: Sequence[str] = (), output_dir: str | Path | None = None
) -> DictConfig:
    """A config as a Hydra job sees it, for code outside ``@hydra.main`` (tests, benchmarks).

    ``${hydra:...}`` stays resolvable; Hydra's own node is dropped, as in a real run.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=config_dir()):
        cfg = compose(name, overrides=list(overrides), return_hydra_config=True)
    HydraConfig().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
        if output_dir is not None:
            cfg.paths.output_dir = str(output_dir)
    return cfg


def run_dir(resume: str | None, fresh: str) -> str:
    """Hydra's run directory: ``resume=<run dir>`` goes on in that run's own directory."""
    return resume or fresh


def hydra_subdir(resume: str | None) -> str:
    """Where Hydra keeps its record of an invocation; a resume keeps the original's."""
    return f".hydra/resumed-{datetime.now():%Y-%m-%d_%H-%M-%S}" if resume else ".hydra"


# Resolvers for configs/hydra/default.yaml; registered on import, before Hydra composes.
OmegaConf.register_new_resolver("rnnlab.run_dir", run_dir, replace=True)
OmegaConf.register_new_resolver("rnnlab.hydra_subdir", hydra_subdir, replace=True)
