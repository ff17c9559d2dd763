"""The layer stack every hand-written cell shares: written once, so a cell's file holds its math.

A cell (:mod:`rnnlab.nn.rnn`, :mod:`~rnnlab.nn.gru`, :mod:`~rnnlab.nn.lstm`) subclasses
:class:`RecurrentStack` and gives it three things: how many ``H``-wide gate blocks its
weights stack (``gates``), how many tensors its state holds (``state_size``: ``h``, or
``h`` and ``c``), and :meth:`RecurrentStack.layer`, one layer over a whole sequence.
Everything around that is here, the same for every cell, and the same as torch.nn's
layers, so that a state_dict moves between the two backends unchanged:

- the arguments and their checks, ``bidirectional`` and ``proj_size`` refused clearly;
- the parameters in PyTorch's names and order (``weight_ih_l{k}``, ``weight_hh_l{k}``,
  ``bias_ih_l{k}``, ``bias_hh_l{k}``) and init, uniform in ``+-1/sqrt(H)``;
- the layer loop, dropout between layers in training, the state per layer;
- the call: batched ``(T, B, I)`` (``(B, T, I)`` with ``batch_first``) or unbatched
  ``(T, I)`` input, a state of ``(L, B, H)`` tensors (``(L, H)`` unbatched), zeros if none.

Beside it, what the cells' own code shares: :func:`input_projection` (the input's part
of every step in one product) and :func:`under_autocast` (a hand-written function run
the way torch.nn's layers run under autocast).
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Callable
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: how a layer's backward is computed: by hand, or by autograd through the same cell
BPTT_MODES = ("manual", "autograd")

#: one layer's ``(W_ih, W_hh, b_ih, b_hh)``; both biases are ``None`` without bias, and
#: ``W_hh`` and ``b_hh`` for a cell linear in its state, which has no recurrent matrix
Weights = tuple[Tensor, Tensor | None, Tensor | None, Tensor | None]
#: a layer's state as the cell reads it: ``h`` (B, H), or ``(h, c)``
LayerState = Tensor | tuple[Tensor, Tensor]


def input_projection(x: Tensor, w_ih: Tensor, bias: Tensor | None) -> Tensor:
    """``x_t W_ih^T + bias`` for every step in one product: (T, B, I) -> (T, B, G*H).

    ``mm`` then ``add_`` is much faster on CPU than ``addmm`` with a broadcast bias. Each
    cell folds into ``bias`` what of ``b_hh`` it can, so that a step adds one product.
    """
    steps, batch, _ = x.shape
    projected = torch.mm(x.reshape(steps * batch, -1), w_ih.t())
    if bias is not None:
        projected = projected.add_(bias)
    return projected.view(steps, batch, -1)


def folded_bias(b_ih: Tensor | None, b_hh: Tensor | None) -> Tensor | None:
    """Both biases in one vector, for a cell whose every gate adds both to its pre-activation."""
    return None if b_ih is None or b_hh is None else b_ih + b_hh


def per_step(*tensors: Tensor) -> list[tuple[Tensor, ...]]:
    """Each (T, ...) tensor as its T per-step views, made once: in a loop they cost as much
    as the math."""
    return [t.unbind(0) for t in tensors]


def under_autocast(function: Callable[..., Any], *tensors: Tensor | None) -> Any:
    """``function(*tensors)``, following autocast as torch.nn's recurrent layers do.

    Autocast would cast each product inside a hand-written function separately and mix
    dtypes with its in-place updates, so the floating inputs are cast once, up front.
    """
    device_type = next(t for t in tensors if t is not None).device.type
    if not torch.is_autocast_enabled(device_type):
        return function(*tensors)
    dtype = torch.get_autocast_dtype(device_type)
    cast = tuple(t if t is None or not t.is_floating_point() else t.to(dtype) for t in tensors)
    with torch.autocast(device_type, enabled=False):
        return function(*cast)


class RecurrentStack(nn.Module):
    """``num_layers`` layers of one cell, with the interface, parameters and init of torch.nn's.

    ``bptt`` picks each layer's backward: ``"manual"`` (written by hand in the cell's
    file) or ``"autograd"`` (the cell unrolled under autograd).
    """

    #: H-wide blocks stacked in W_ih and W_hh (the cell's gates)
    gates: ClassVar[int]
    #: tensors in the state: 1 (``h``) or 2 (``h``, ``c``)
    state_size: ClassVar[int] = 1
    #: whether the cell has W_hh and b_hh; a cell linear in its state reads ``x`` alone
    recurrent: ClassVar[bool] = True
    #: the torch.nn layer this one stands in for, named in error messages
    builtin: ClassVar[str]

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bptt: str = "manual",
        *,
        bidirectional: bool = False,
        proj_size: int = 0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self._check_arguments(input_size, hidden_size, num_layers, dropout, bptt)
        if bidirectional:
            raise ValueError(
                f"{self._name} does not support bidirectional=True; use {self.builtin}."
            )
        if proj_size:
            raise ValueError(f"{self._name} does not support proj_size; use torch.nn.LSTM.")
        if dropout > 0 and num_layers == 1:
            warnings.warn(
                "dropout acts between recurrent layers, so it has no effect with num_layers=1.",
                UserWarning,
                stacklevel=3,
            )
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout = bias, batch_first, float(dropout)
        self.bptt = bptt
        width = self.gates * hidden_size
        # Registration order is torch.nn's, so that reset_parameters draws the same numbers.
        for layer in range(num_layers):
            shapes = {"weight_ih": (width, input_size if layer == 0 else hidden_size)}
            if self.recurrent:
                shapes["weight_hh"] = (width, hidden_size)
            if bias:
                shapes["bias_ih"] = (width,)
                if self.recurrent:
                    shapes["bias_hh"] = (width,)
            for name, shape in shapes.items():
                parameter = nn.Parameter(torch.empty(shape, device=device, dtype=dtype))
                self.register_parameter(f"{name}_l{layer}", parameter)
        self.reset_parameters()

    @property
    def _name(self) -> str:
        return type(self).__name__

    def layer(self, x: Tensor, state: LayerState, weights: Weights) -> tuple[Tensor, LayerState]:
        """One layer over the whole sequence: ``x`` (T, B, I) -> output (T, B, H), final state."""
        raise NotImplementedError

    def reset_parameters(self) -> None:
        """Uniform(-1/sqrt(H), 1/sqrt(H)) over every parameter in order, as torch.nn's."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for parameter in self.parameters():
            nn.init.uniform_(parameter, -bound, bound)

    def flatten_parameters(self) -> None:
        """No-op, for code written against torch.nn (there is no cuDNN weight buffer here)."""

    def layer_parameters(self, layer: int) -> Weights:
        """``(W_ih, W_hh, b_ih, b_hh)`` of one layer; ``None`` for what it does not have."""
        return (
            getattr(self, f"weight_ih_l{layer}"),
            getattr(self, f"weight_hh_l{layer}", None),
            getattr(self, f"bias_ih_l{layer}", None),
            getattr(self, f"bias_hh_l{layer}", None),
        )

    def forward(self, input: Tensor, hx: Any = None) -> tuple[Tensor, Any]:
        """``(output, h_n)`` (``(output, (h_n, c_n))`` for two state tensors) exactly as
        torch.nn's layer returns them, for batched or unbatched input."""
        x, start, unbatched = self._to_time_major(input, hx)
        finals: list[tuple[Tensor, ...]] = []
        for layer in range(self.num_layers):
            if layer > 0 and self.training and self.dropout > 0:
                x = F.dropout(x, self.dropout, training=True)
            state = tuple(s[layer] for s in start)
            x, final = self.layer(
                x, state if self.state_size > 1 else state[0], self.layer_parameters(layer)
            )  # type: ignore[arg-type]
            finals.append(final if isinstance(final, tuple) else (final,))
        stacked = tuple(torch.stack(parts) for parts in zip(*finals, strict=True))
        if unbatched:
            x, stacked = x.squeeze(1), tuple(s.squeeze(1) for s in stacked)
        elif self.batch_first:
            x = x.transpose(0, 1)
        return x, (stacked if self.state_size > 1 else stacked[0])

    def _to_time_major(self, input: Tensor, hx: Any) -> tuple[Tensor, tuple[Tensor, ...], bool]:
        """Input as (T, B, I), the state as ``state_size`` tensors (L, B, H) (zeros if not
        given), and whether the input was unbatched."""
        if input.dim() not in (2, 3):
            raise ValueError(
                f"{self._name} expects 2-D (unbatched) or 3-D input, got {input.dim()}-D."
            )
        if input.shape[-1] != self.input_size:
            raise ValueError(
                f"{self._name} expects {self.input_size} input features, got {input.shape[-1]}."
            )
        unbatched = input.dim() == 2
        x = (
            input.unsqueeze(1)
            if unbatched
            else (input.transpose(0, 1) if self.batch_first else input)
        )
        if x.shape[0] == 0:
            raise ValueError(f"{self._name} expects a sequence of at least one step.")
        expected = (self.num_layers, x.shape[1], self.hidden_size)
        if hx is None:
            return x, (x.new_zeros(expected),) * self.state_size, unbatched
        given = self._state_tensors(hx)
        state = tuple(h.unsqueeze(1) if unbatched else h for h in given)
        if any(
            h.dim() != input.dim() or s.shape != expected for h, s in zip(given, state, strict=True)
        ):
            wanted = (self.num_layers, self.hidden_size) if unbatched else expected
            shapes = [tuple(h.shape) for h in given]
            names = "hx" if self.state_size == 1 else "h0 and c0"
            got = shapes[0] if self.state_size == 1 else shapes
            raise ValueError(f"{self._name} expects {names} of shape {wanted}, got {got}.")
        return x, state, unbatched

    def _state_tensors(self, hx: Any) -> tuple[Tensor, ...]:
        """``hx`` as a tuple of ``state_size`` tensors, or one sentence on what it should be."""
        if self.state_size == 1:
            return (hx,)
        if not isinstance(hx, tuple | list) or len(hx) != 2:
            raise ValueError(f"{self._name} expects hx as a pair (h0, c0).")
        return tuple(hx)

    def _check_arguments(
        self, input_size: int, hidden_size: int, num_layers: int, dropout: float, bptt: str
    ) -> None:
        """Refuse, with one sentence each, sizes and options this stack cannot take."""
        sizes = {"input_size": input_size, "hidden_size": hidden_size, "num_layers": num_layers}
        for name, value in sizes.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(
                    f"{self._name} needs {name} to be a positive integer, got {value!r}."
                )
        if bptt not in BPTT_MODES:
            raise ValueError(f"{self._name} bptt must be 'manual' or 'autograd', got {bptt!r}.")
        number = isinstance(dropout, numbers.Number) and not isinstance(dropout, bool)
        if not number or not 0 <= dropout <= 1:  # type: ignore[operator]
            raise ValueError(f"{self._name} dropout must be a number in [0, 1], got {dropout!r}.")

    def extra_repr(self) -> str:
        text = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            text += f", num_layers={self.num_layers}"
        text += self._cell_repr()
        if not self.bias:
            text += ", bias=False"
        if self.batch_first:
            text += ", batch_first=True"
        if self.dropout:
            text += f", dropout={self.dropout}"
        return text + f", bptt={self.bptt!r}"

    def _cell_repr(self) -> str:
        """A cell's own options in the repr (the Elman cell's nonlinearity)."""
        return ""
