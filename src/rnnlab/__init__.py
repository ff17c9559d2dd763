"""rnnlab: recurrent language models with PyTorch Lightning and Hydra.

Compares PyTorch's ``torch.nn.RNN`` with a hand-written RNN (forward pass and
backpropagation through time) on the same data, training loop and metrics.
"""

__version__ = "0.1.0"
