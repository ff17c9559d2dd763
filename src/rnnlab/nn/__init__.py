"""The subject of the research, in torch alone: copy any of it anywhere.

- :mod:`rnnlab.nn.rnn`: :class:`~rnnlab.nn.rnn.CustomRNN`, the hand-written Elman RNN
  (forward pass and BPTT), a drop-in for ``torch.nn.RNN``; it imports torch only;
- :mod:`rnnlab.nn.lm`: :class:`~rnnlab.nn.lm.RNNLM`, the language model, and
  :class:`~rnnlab.nn.lm.ModelConfig`, its settings;
- :mod:`rnnlab.nn.sampling`: generation with temperature, top-k, a prompt and a seed.

Nothing here imports the rest of rnnlab but the dependency-free :mod:`rnnlab.errors`.
"""

#: where a model's recurrent core comes from: torch.nn's layers, or rnnlab's hand-written ones
#: (a plain tuple here, so that reports can name the backends without importing torch)
BACKENDS = ("builtin", "custom")
