"""rnnlab: recurrent language models with PyTorch Lightning and Hydra.

Compares PyTorch's ``torch.nn.RNN`` with a hand-written RNN (forward pass and
backpropagation through time) on the same data, training loop and metrics.
"""

from pathlib import Path

__version__ = "0.1.0"


def config_dir() -> str:
    """Hydra's configs/: inside an installed wheel, else at the top of the checkout."""
    packaged = Path(__file__).parent / "configs"
    return str(packaged if packaged.is_dir() else Path(__file__).resolve().parents[2] / "configs")
