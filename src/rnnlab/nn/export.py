r"""The language model as one function over a chunk, its state in the open, for export.

Exporters trip on recurrent layers three ways: they bake the default zero state of one
batch size into the graph, fix the sequence length at the traced one, or refuse
``nn.RNN``/``GRU``/``LSTM`` outright (``torch.export``). :class:`ChunkLM` avoids all
three. The state is an explicit input and output, and each layer's time loop is
``torch._higher_order_ops.scan.scan``, which ``torch.export`` keeps as one loop over a
dynamic number of steps (ONNX ``Scan``) where a Python loop would be unrolled at the
traced length. The steps are the hand-written cells' own step functions
(:func:`~rnnlab.nn.cores.cell_functions`) over the parameters both backends share by name,
so a model trained on either backend exports the same way, and nothing of the
``autograd.Function`` behind the manual BPTT reaches the exporter. Shapes::

    tokens (B, T) int64,  h (L, B, H)  [, c (L, B, H)]  ->  log_probs (B, T, V),  h  [, c]

with ``B`` and ``T`` dynamic and ``c`` for the LSTM only: one call over a chunk, its new
state fed to the next call, gives what one call over the whole text gives.
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import Tensor, nn

from rnnlab.errors import UserError
from rnnlab.nn.cores import PAIRED_STATE, State, cell_functions, layer_weights
from rnnlab.nn.lm import RNNLM

#: the exported function's inputs and outputs, by name, for each kind of state
INPUTS = {"h": ("tokens", "h"), "hc": ("tokens", "h", "c")}
OUTPUTS = {"h": ("log_probs", "h_out"), "hc": ("log_probs", "h_out", "c_out")}


def state_kind(model: RNNLM) -> str:
    """``"hc"`` for the LSTM (two state tensors), ``"h"`` for the others."""
    return "hc" if model.config.cell in PAIRED_STATE else "h"


def _scan():
    """torch's scan (a prototype in torch 2.x), or one sentence on why it is not here."""
    try:
        from torch._higher_order_ops.scan import scan
    except ImportError as exc:
        raise UserError(
            f"torch {torch.__version__} has no torch scan, which export needs for a time loop "
            "of dynamic length; install torch 2.13 (pip install torch==2.13.0)."
        ) from exc
    return scan


class ChunkLM(nn.Module):
    """``(tokens, h[, c]) -> (log_probs, h[, c])``: a trained :class:`RNNLM` in eval mode,
    one chunk at a time, its state passed in and returned."""

    def __init__(self, model: RNNLM) -> None:
        super().__init__()
        if model.config.arch == "blocks":
            raise UserError(
                "a model with model.arch=blocks cannot be exported yet: the export scans a "
                "stacked core's layers; export a model.arch=stack model."
            )
        self.model = model.eval()

    def forward(self, tokens: Tensor, h: Tensor, c: Tensor | None = None) -> tuple[Tensor, ...]:
        model, scan = self.model, _scan()
        project, step = cell_functions(model.config.cell, model.config.nonlinearity)
        x = model.embed(tokens.t())  # (T, B, E): the core runs time-major
        finals: list[State] = []
        for layer in range(model.config.num_layers):
            weights = layer_weights(model.rnn, layer)
            start: State = h[layer] if c is None else (h[layer], c[layer])

            def body(state: State, z_t: Tensor, weights=weights) -> tuple[State, Tensor]:
                new, _ = step(z_t, state, weights)
                # scan's outputs may not alias its carry: the layer's output is a copy of h
                return new, (new if c is None else new[0]).clone()

            final, x = scan(body, start, project(x, weights))
            finals.append(final)
        log_probs = model.log_probs(x.transpose(0, 1))
        if c is None:
            return log_probs, torch.stack(finals)
        return log_probs, torch.stack([f[0] for f in finals]), torch.stack([f[1] for f in finals])


def reference_outputs(model: RNNLM, tokens: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
    """What :class:`ChunkLM` must return, from ``model``'s own forward on its own backend."""
    feats, new = model.features(tokens, state[0] if len(state) == 1 else (state[0], state[1]))
    log_probs = model.log_probs(feats)
    return (log_probs, new) if isinstance(new, Tensor) else (log_probs, *new)


def zero_inputs(model: RNNLM, batch: int, steps: int) -> tuple[Tensor, ...]:
    """Tokens (all id 0) and a zero state: what :class:`ChunkLM` is traced with."""
    state = torch.zeros(model.config.num_layers, batch, model.config.hidden_size)
    tokens = torch.zeros(batch, steps, dtype=torch.long)
    return (tokens, state) if state_kind(model) == "h" else (tokens, state, state.clone())


def dynamic_shapes(kind: str) -> tuple[dict[int, torch.export.Dim], ...]:
    """Batch and time free in the tokens, the batch free in each state tensor."""
    batch, time = torch.export.Dim("batch", min=1), torch.export.Dim("time", min=1)
    return ({0: batch, 1: time}, *({1: batch} for _ in INPUTS[kind][1:]))


def export_program(model: RNNLM) -> torch.export.ExportedProgram:
    """``model`` on CPU in float32 as a ``torch.export`` program with dynamic batch and time.

    Traced at batch 2 and 3 steps: ``torch.export`` specialises sizes 0 and 1. A copy is
    exported; ``model`` itself stays where it is, in the mode it is in.
    """
    model = copy.deepcopy(model).to("cpu", torch.float32)
    inputs = zero_inputs(model, batch=2, steps=3)
    return torch.export.export(
        ChunkLM(model), inputs, dynamic_shapes=dynamic_shapes(state_kind(model))
    )


def onnx_bytes(program: torch.export.ExportedProgram, kind: str) -> bytes:
    """``program`` as one self-contained ONNX model, its inputs and outputs named as in
    :data:`INPUTS` and :data:`OUTPUTS` (needs onnx and onnxscript)."""
    with warnings.catch_warnings():  # that the program's own axis names are kept
        warnings.filterwarnings("ignore", message=".*axis name.*will not be used")
        onnx_program = torch.onnx.export(
            program,
            dynamic_shapes=dynamic_shapes(kind),  # names the free axes "batch" and "time"
            input_names=list(INPUTS[kind]),
            output_names=list(OUTPUTS[kind]),
            dynamo=True,
            verbose=False,
        )
    return onnx_program.model_proto.SerializeToString()
