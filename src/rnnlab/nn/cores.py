"""The registry of recurrent cells, and what the probes and the export ask of a cell.

Each cell exists twice, PyTorch's layer (``builtin``) and rnnlab's hand-written one
(``custom``), with the same arguments and the same parameters by name. Code that runs a
model's core step by step (:mod:`rnnlab.nn.dynamics`, :mod:`rnnlab.nn.export`) reads the
cell from here: its gate blocks, its input projection and step function, its weights by
the names both backends share, its state. A new cell is one entry in each table.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from rnnlab.nn import gru, lstm, mingru, minlstm, rnn
from rnnlab.nn.stack import Weights

#: the recurrent cells, each PyTorch's (builtin) and rnnlab's hand-written one (custom);
#: the cells linear in their state exist in rnnlab only
CORES: dict[str, dict[str, type[nn.Module]]] = {
    "rnn": {"builtin": nn.RNN, "custom": rnn.CustomRNN},
    "gru": {"builtin": nn.GRU, "custom": gru.CustomGRU},
    "lstm": {"builtin": nn.LSTM, "custom": lstm.CustomLSTM},
    "mingru": {"custom": mingru.MinGRU},
    "minlstm": {"custom": minlstm.MinLSTM},
}
#: the H-wide gate blocks each cell stacks in its weights, in order (W_ih, W_hh: (G*H, .))
GATES = {
    "rnn": ("h",),
    "gru": ("r", "z", "n"),
    "lstm": ("i", "f", "g", "o"),
    "mingru": ("z", "h~"),
    "minlstm": ("f", "i", "h~"),
}
#: the cells linear in their state, ``h_t = a_t * h_{t-1} + b_t``: no W_hh, a scan option,
#: and a step Jacobian that is ``diag(a_t)`` (their step functions name ``a``)
LINEAR = frozenset(cell for cell, cores in CORES.items() if not cores["custom"].recurrent)
#: the cells whose state is a pair ``(h, c)``
PAIRED_STATE = frozenset(cell for cell, cores in CORES.items() if cores["custom"].state_size == 2)
#: the Elman cell's choices of ``phi``
NONLINEARITIES = rnn.NONLINEARITIES

#: what a core carries from one window to the next: ``h``, or ``(h, c)`` for the LSTM
State = Tensor | tuple[Tensor, Tensor]
#: a cell's input projection ``(x (T, B, I), weights) -> (T, B, G*H)``
Project = Callable[[Tensor, Weights], Tensor]
#: a cell's step ``(projection of x_t, state, weights) -> (new state, activations by name)``
Step = Callable[[Tensor, State, Weights], tuple[State, dict[str, Tensor]]]


def cell_functions(cell: str, nonlinearity: str = "tanh") -> tuple[Project, Step]:
    """The cell's input projection and step function, as its hand-written layer uses them."""
    if cell == "rnn":
        return rnn.project, partial(rnn.elman_step, nonlinearity=nonlinearity)
    functions: dict[str, tuple[Project, Step]] = {
        "gru": (gru.project, gru.gru_step),
        "lstm": (lstm.project, lstm.lstm_step),
        "mingru": (mingru.project, mingru.mingru_step),
        "minlstm": (minlstm.project, minlstm.minlstm_step),
    }
    return functions[cell]


def layer_weights(core: nn.Module, layer: int) -> Weights:
    """``(W_ih, W_hh, b_ih, b_hh)`` of a layer, by the names both backends share (``None``
    for what a cell linear in its state does not have)."""
    return (
        getattr(core, f"weight_ih_l{layer}"),
        getattr(core, f"weight_hh_l{layer}", None),
        getattr(core, f"bias_ih_l{layer}", None),
        getattr(core, f"bias_hh_l{layer}", None),
    )


def detached(state: Any) -> Any:
    """The carried state cut from the graph: truncated BPTT stops at the window's edge.

    A state is a tensor or a tuple of states: ``h``, ``(h, c)``, or a tuple of residual
    blocks' states (:mod:`rnnlab.nn.blocks`).
    """
    if isinstance(state, torch.Tensor):
        return state.detach()
    return tuple(detached(s) for s in state)
