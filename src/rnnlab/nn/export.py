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

    tokens (B, T) int64,  h (L, B, H)  [, c (L, B, H)]  [, m (L, B, k-1, H)]
        ->  log_probs (B, T, V),  h  [, c]  [, m]

with ``B`` and ``T`` dynamic, ``c`` for a cell whose state is a pair (the LSTM), and ``m``
for residual blocks with a convolution (``model.conv_kernel = k > 1``): each block's last
``k - 1`` convolution inputs. ``L`` counts layers, or blocks (one mixer layer each). One
call over a chunk, its new state fed to the next call, gives what one call over the whole
text gives.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from rnnlab.errors import UserError
from rnnlab.nn.cores import PAIRED_STATE, State, cell_functions, layer_weights
from rnnlab.nn.lm import RNNLM


def state_shapes(model: RNNLM, batch: int | str) -> dict[str, tuple[int | str, ...]]:
    """The state tensors a chunk takes and returns, by name, each with its batch at dim 1."""
    config = model.config
    layers = (config.num_layers, batch, config.hidden_size)
    shapes: dict[str, tuple[int | str, ...]] = {"h": layers}
    if config.cell in PAIRED_STATE:
        shapes["c"] = layers
    if config.arch == "blocks" and config.conv_kernel > 1:
        shapes["m"] = (config.num_layers, batch, config.conv_kernel - 1, config.hidden_size)
    return shapes


def input_names(model: RNNLM) -> list[str]:
    """The exported function's inputs, by name: the tokens, then the state."""
    return ["tokens", *state_shapes(model, 1)]


def output_names(model: RNNLM) -> list[str]:
    """The exported function's outputs, by name: the log-probabilities, then the new state."""
    return ["log_probs", *(f"{name}_out" for name in state_shapes(model, 1))]


def layer_state(named: dict[str, Tensor], layer: int) -> State:
    """Layer ``layer``'s carried state out of the named tensors: ``h`` or ``(h, c)``."""
    return named["h"][layer] if "c" not in named else (named["h"][layer], named["c"][layer])


def nested_state(model: RNNLM, flat: Sequence[Tensor]) -> Any:
    """The named state tensors as the model's core takes its state."""
    named = dict(zip(state_shapes(model, 0), flat, strict=True))
    if model.config.arch == "stack":
        return named["h"] if "c" not in named else (named["h"], named["c"])
    blocks = []
    for k in range(model.config.num_layers):
        h = named["h"][k : k + 1]  # (1, B, H): the block's one-layer mixer
        mixer = h if "c" not in named else (h, named["c"][k : k + 1])
        memory = (named["m"][k].transpose(0, 1),) if "m" in named else ()  # (k-1, B, H)
        blocks.append((mixer, *memory))
    return tuple(blocks)


def flat_state(model: RNNLM, state: Any) -> list[Tensor]:
    """The core's state as the named tensors of :func:`state_shapes`, in their order."""
    if model.config.arch == "stack":
        return [state] if isinstance(state, Tensor) else list(state)
    mixers = [block[0] for block in state]
    flat = (
        [torch.cat(mixers)]
        if isinstance(mixers[0], Tensor)
        else [torch.cat(part) for part in zip(*mixers, strict=True)]
    )
    if "m" in state_shapes(model, 0):
        flat.append(torch.stack([block[1].transpose(0, 1) for block in state]))
    return flat


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
    """``(tokens, *state) -> (log_probs, *state)``: a trained :class:`RNNLM` in eval mode,
    one chunk at a time, its state (:func:`state_shapes`) passed in and returned."""

    def __init__(self, model: RNNLM) -> None:
        super().__init__()
        if model.window is not None:
            raise UserError(
                "model.cell=attention cannot be exported: the export scans a recurrent cell's "
                "steps with its state in the open, and attention reads a whole window; export "
                "a recurrent model."
            )
        self.model = model.eval()

    def forward(self, tokens: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
        model = self.model
        named = dict(zip(state_shapes(model, 0), state, strict=True))
        blocks = model.rnn.blocks if model.config.arch == "blocks" else None
        x = model.embed(tokens.t())  # (T, B, E): the core runs time-major
        finals: dict[str, list[Tensor]] = {name: [] for name in named}
        for k, (core, index) in enumerate(model.recurrent_layers()):
            u = x
            if blocks is not None:
                past = named["m"][k].transpose(0, 1) if "m" in named else None
                u, memory = blocks[k].mixer_input(x, past)
                if "m" in named:
                    finals["m"].append(memory.transpose(0, 1))
            final, y = self.layer(core, index, u, layer_state(named, k))
            for name, t in zip(("h", "c"), (final,) if "c" not in named else final, strict=False):
                finals[name].append(t)
            x = y if blocks is None else blocks[k].after_mixer(x, y)
        if blocks is not None:
            x = model.rnn.norm(x)
        log_probs = model.log_probs(x.transpose(0, 1))
        return log_probs, *(torch.stack(finals[name]) for name in named)

    def layer(self, core: nn.Module, index: int, x: Tensor, start: State) -> tuple[State, Tensor]:
        """One recurrent layer over the chunk by its cell's step function: ``(final, output)``."""
        project, step = cell_functions(self.model.config.cell, self.model.config.nonlinearity)
        weights = layer_weights(core, index)

        def body(state: State, z_t: Tensor) -> tuple[State, Tensor]:
            new, _ = step(z_t, state, weights)
            # scan's outputs may not alias its carry: the layer's output is a copy of h
            return new, (new if isinstance(new, Tensor) else new[0]).clone()

        return _scan()(body, start, project(x, weights))


def reference_outputs(model: RNNLM, tokens: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
    """What :class:`ChunkLM` must return, from ``model``'s own forward on its own backend."""
    feats, new = model.features(tokens, nested_state(model, state))
    return model.log_probs(feats), *flat_state(model, new)


def zero_inputs(model: RNNLM, batch: int, steps: int) -> tuple[Tensor, ...]:
    """Tokens (all id 0) and a zero state: what :class:`ChunkLM` is traced with."""
    tokens = torch.zeros(batch, steps, dtype=torch.long)
    return tokens, *(torch.zeros(shape) for shape in state_shapes(model, batch).values())


def dynamic_shapes(model: RNNLM) -> tuple[Any, ...]:
    """Batch and time free in the tokens, the batch free in each state tensor (as the
    signature ``(tokens, *state)`` nests them)."""
    batch, time = torch.export.Dim("batch", min=1), torch.export.Dim("time", min=1)
    return {0: batch, 1: time}, tuple({1: batch} for _ in state_shapes(model, 1))


def export_program(model: RNNLM) -> torch.export.ExportedProgram:
    """``model`` on CPU in float32 as a ``torch.export`` program with dynamic batch and time.

    Traced at batch 2 and 3 steps: ``torch.export`` specialises sizes 0 and 1. A copy is
    exported; ``model`` itself stays where it is, in the mode it is in.
    """
    model = copy.deepcopy(model).to("cpu", torch.float32)
    inputs = zero_inputs(model, batch=2, steps=3)
    return torch.export.export(ChunkLM(model), inputs, dynamic_shapes=dynamic_shapes(model))


def onnx_bytes(program: torch.export.ExportedProgram, model: RNNLM) -> bytes:
    """``program`` (of ``model``) as one self-contained ONNX model, its inputs and outputs
    named by :func:`input_names` and :func:`output_names` (needs onnx and onnxscript)."""
    with warnings.catch_warnings():  # that the program's own axis names are kept
        warnings.filterwarnings("ignore", message=".*axis name.*will not be used")
        onnx_program = torch.onnx.export(
            program,
            dynamic_shapes=dynamic_shapes(model),  # names the free axes "batch" and "time"
            input_names=input_names(model),
            output_names=output_names(model),
            dynamo=True,
            verbose=False,
        )
    return onnx_program.model_proto.SerializeToString()
