"""rnnlab: recurrent language models with PyTorch Lightning and Hydra.

Compares PyTorch's recurrent layers with hand-written ones (forward pass and
backpropagation through time) on the same data, training loop and metrics. The
layers, from the bottom up (imports flow one way, from ``cli`` down):

- :mod:`rnnlab.nn`: torch only, copyable: the hand-written cells, the language model and
  its settings, sampling, probes, the exportable chunk function;
- :mod:`rnnlab.data`: corpora, vocabularies, the token cache, the LightningDataModule;
- :mod:`rnnlab.training`: the LightningModule, its callbacks, checkpoints and resume;
- :mod:`rnnlab.report`: run directories read back, sweep summaries, comparison reports;
- :mod:`rnnlab.cli`: the Hydra entry points ``rnnlab-train``, ``-sample``, ``-eval``,
  ``-compare``, ``-inspect`` and ``-export``.

Importing ``rnnlab`` loads nothing else.
"""

__version__ = "0.1.0"
