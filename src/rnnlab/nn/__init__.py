"""The subject of the research, in torch alone: copy any of it anywhere.

- :mod:`rnnlab.nn.rnn`, :mod:`rnnlab.nn.gru`, :mod:`rnnlab.nn.lstm`: the hand-written
  Elman RNN, GRU and LSTM (forward pass and BPTT), drop-ins for ``torch.nn.RNN``, ``GRU``
  and ``LSTM``; each file holds its cell's math only;
- :mod:`rnnlab.nn.stack`: the layer stack around every hand-written cell (arguments,
  parameters, layers, dropout between them, the carried state), written once;
- :mod:`rnnlab.nn.cores`: the registry of cells, builtin and custom, and what the probes
  and the export ask of a cell;
- :mod:`rnnlab.nn.lm`: :class:`~rnnlab.nn.lm.RNNLM`, the language model, and
  :class:`~rnnlab.nn.lm.ModelConfig`, its settings;
- :mod:`rnnlab.nn.sampling`: generation with temperature, top-k, a prompt and a seed;
- :mod:`rnnlab.nn.dynamics`: probes of the recurrent dynamics (gradient through time,
  spectra, the step Jacobian, saturation);
- :mod:`rnnlab.nn.export`: the model as one function of a chunk and the state, for
  ``torch.export`` and ONNX.

Nothing here imports the rest of rnnlab but the dependency-free :mod:`rnnlab.errors`.
"""

#: where a model's recurrent core comes from: torch.nn's layers, or rnnlab's hand-written ones
#: (a plain tuple here, so that reports can name the backends without importing torch)
BACKENDS = ("builtin", "custom")
