"""rnnlab: recurrent language models with PyTorch Lightning and Hydra.

Compares PyTorch's ``torch.nn.RNN`` with a hand-written RNN (forward pass and
backpropagation through time) on the same data, training loop and metrics.
"""

from datetime import datetime
from pathlib import Path

from omegaconf import OmegaConf

__version__ = "0.1.0"


def config_dir() -> str:
    """Hydra's configs/: inside an installed wheel, else at the top of the checkout."""
    packaged = Path(__file__).parent / "configs"
    return str(packaged if packaged.is_dir() else Path(__file__).resolve().parents[2] / "configs")


def run_dir(resume: str | None, fresh: str) -> str:
    """Hydra's run directory: ``resume=<run dir>`` goes on in that run's own directory."""
    return resume or fresh


def hydra_subdir(resume: str | None) -> str:
    """Where Hydra keeps its record of an invocation; a resume keeps the original's."""
    return f".hydra/resumed-{datetime.now():%Y-%m-%d_%H-%M-%S}" if resume else ".hydra"


# Resolvers for configs/hydra/default.yaml; registered on import, before Hydra composes.
OmegaConf.register_new_resolver("rnnlab.run_dir", run_dir, replace=True)
OmegaConf.register_new_resolver("rnnlab.hydra_subdir", hydra_subdir, replace=True)
