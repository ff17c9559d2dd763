r"""A hand-written Elman RNN, a drop-in for :class:`torch.nn.RNN`.

Shapes, noted once (``T`` steps, ``B`` batch, ``I`` input size, ``H`` hidden
size, ``L`` layers; ``batch_first=True`` swaps the first two axes of input and
output; unbatched input drops the ``B`` axis everywhere)::

    input   (T, B, I)        h0, h_n  (L, B, H)        output  (T, B, H)

One layer, with ``h_0`` the initial state and rows as batch elements, exactly
as the code computes it::

    z_t = x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh        t = 1 .. T
    h_t = phi(z_t)                                         phi = tanh | relu

The layer's output is ``(h_1 .. h_T)`` and its final state ``h_n = h_T``.
Layer ``k > 0`` reads layer ``k - 1``'s output, through dropout in training.

Backpropagation through time. With ``dy_t = dL/dh_t`` arriving from the
output, ``g_t`` the total gradient reaching ``h_t`` and
``delta_t = dL/dz_t``::

    g_T       = dy_T + dL/dh_n
    delta_t   = g_t * phi'(z_t)        phi'(z_t) = 1 - h_t^2 (tanh), [h_t > 0] (relu)
    g_{t-1}   = dy_{t-1} + delta_t W_hh                  t = T .. 2
    dL/dh_0   = delta_1 W_hh

Only that chain is sequential. Everything else sums over steps, so it is one
matrix product over all ``T * B`` rows once the deltas are known::

    dL/dW_ih  = sum_t delta_t^T x_t         dL/dx_t = delta_t W_ih
    dL/dW_hh  = sum_t delta_t^T h_{t-1}     dL/db_ih = dL/db_hh = sum_t sum_batch delta_t

``bptt="manual"`` runs the forward without building an autograd graph and
the backward above (:class:`ElmanBPTT`, :func:`elman_layer_manual`);
``bptt="autograd"`` unrolls the same cell under autograd (:func:`elman_layer_autograd`).
Both give the same numbers.
"""

from __future__ import annotations

import math
import numbers
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

NONLINEARITIES = ("tanh", "relu")
BPTT_MODES = ("manual", "autograd")


def input_projection(x: Tensor, w_ih: Tensor, b_ih: Tensor | None, b_hh: Tensor | None) -> Tensor:
    """``x_t W_ih^T + b_ih + b_hh`` for every step in one product: (T, B, H).

    Both biases are folded in here so that each step is a single ``addmm``.
    (``mm`` then ``add_`` is much faster on CPU than ``addmm`` with a broadcast bias.)
    """
    steps, batch, _ = x.shape
    projected = torch.mm(x.reshape(steps * batch, -1), w_ih.t())
    if b_ih is not None and b_hh is not None:
        projected = projected.add_(b_ih + b_hh)
    return projected.view(steps, batch, -1)


def _local_derivative(hs: Tensor, nonlinearity: str) -> Tensor:
    """``phi'(z_t)`` for all steps at once, from the outputs ``h_t = phi(z_t)``."""
    if nonlinearity == "tanh":
        return torch.addcmul(hs.new_ones(()), hs, hs, value=-1)
    return (hs > 0).to(hs.dtype)


def _deltas(
    grad_out: Tensor, grad_hn: Tensor, hs: Tensor, w_hh: Tensor, nonlinearity: str
) -> Tensor:
    """``delta_t = dL/dz_t`` for every step, walking back in time: (T, B, H).

    The buffer starts as ``phi'(z_t)`` and is multiplied by ``g_t`` in place, so
    each step costs one ``mul_`` and one ``addmm``.
    """
    deltas = _local_derivative(hs, nonlinearity)
    delta, dy = deltas.unbind(0), grad_out.unbind(0)
    g = dy[-1] + grad_hn
    for t in range(len(delta) - 1, 0, -1):
        delta[t].mul_(g)  # delta_t = g_t * phi'(z_t)
        torch.addmm(dy[t - 1], delta[t], w_hh, out=g)  # g_{t-1} = dy_{t-1} + delta_t W_hh
    delta[0].mul_(g)
    return deltas


def _recurrent_weight_grad(deltas: Tensor, hs: Tensor, h0: Tensor) -> Tensor:
    """``sum_t delta_t^T h_{t-1}``: steps 2..T in one product, step 1 against ``h_0``."""
    hidden = deltas.shape[-1]
    first = torch.mm(deltas[0].t(), h0)
    if deltas.shape[0] == 1:
        return first
    return torch.addmm(first, deltas[1:].reshape(-1, hidden).t(), hs[:-1].reshape(-1, hidden))


class ElmanBPTT(torch.autograd.Function):
    """One Elman layer over a whole sequence, with hand-written BPTT.

    ``apply(x, h0, w_ih, w_hh, b_ih, b_hh, nonlinearity) -> (output, h_n)`` with
    ``x`` (T, B, I) and ``h0`` (B, H); the biases may both be ``None``.
    The forward builds no graph and saves the input and the hidden states; the
    backward is the module docstring's equations. Double backward is not supported.
    """

    @staticmethod
    def forward(
        ctx: Any,
        x: Tensor,
        h0: Tensor,
        w_ih: Tensor,
        w_hh: Tensor,
        b_ih: Tensor | None,
        b_hh: Tensor | None,
        nonlinearity: str,
    ) -> tuple[Tensor, Tensor]:
        x = x.contiguous()
        # z_t without its recurrent term; each step adds that term and applies phi in place.
        hs = input_projection(x, w_ih, b_ih, b_hh)
        w_hh_t = w_hh.t()
        h_prev = h0
        for h_t in hs.unbind(0):
            h_t.addmm_(h_prev, w_hh_t)
            if nonlinearity == "tanh":
                h_t.tanh_()
            else:
                h_t.relu_()
            h_prev = h_t
        ctx.nonlinearity = nonlinearity
        ctx.save_for_backward(x, h0, w_ih, w_hh, hs)
        return hs, hs[-1].clone()

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: Tensor, grad_hn: Tensor) -> tuple[Tensor | None, ...]:
        x, h0, w_ih, w_hh, hs = ctx.saved_tensors
        need_x, need_h0, need_w_ih, need_w_hh, need_b_ih, need_b_hh, _ = ctx.needs_input_grad
        deltas = _deltas(grad_out, grad_hn, hs, w_hh, ctx.nonlinearity)
        flat = deltas.view(-1, deltas.shape[-1])

        grad_x = torch.mm(flat, w_ih).view_as(x) if need_x else None
        grad_h0 = torch.mm(deltas[0], w_hh) if need_h0 else None
        grad_w_ih = torch.mm(flat.t(), x.view(flat.shape[0], -1)) if need_w_ih else None
        grad_w_hh = _recurrent_weight_grad(deltas, hs, h0) if need_w_hh else None
        # One tensor for both biases is safe: autograd copies it before accumulating in place.
        grad_b = flat.sum(0) if need_b_ih or need_b_hh else None
        grad_b_ih = grad_b if need_b_ih else None
        grad_b_hh = grad_b if need_b_hh else None
        return grad_x, grad_h0, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh, None


#: one layer's ``(W_ih, W_hh, b_ih, b_hh)``; both biases are ``None`` without bias
Weights = tuple[Tensor, Tensor, Tensor | None, Tensor | None]


def elman_layer_autograd(
    x: Tensor, h0: Tensor, weights: Weights, nonlinearity: str
) -> tuple[Tensor, Tensor]:
    """The same layer as :class:`ElmanBPTT`, unrolled under autograd.

    Looping over ``unbind`` (not ``x[t]``) matters: indexing makes autograd
    write a full-size zero tensor per step in the backward.
    """
    h = h0
    hs = []
    for z_t in input_projection(x, weights[0], weights[2], weights[3]).unbind(0):
        h, _ = elman_step(z_t, h, weights, nonlinearity)
        hs.append(h)
    return torch.stack(hs), h


def elman_step(
    z_t: Tensor, h: Tensor, weights: Weights, nonlinearity: str
) -> tuple[Tensor, dict[str, Tensor]]:
    """One step ``h_t = phi(z_t + h_{t-1} W_hh^T)``, ``z_t`` from :func:`input_projection`.

    Returns the new state and the cell's activations by name (here only ``h``), which
    is what :mod:`rnnlab.nn.dynamics` reads saturation from.
    """
    activation = torch.tanh if nonlinearity == "tanh" else torch.relu
    h = activation(torch.addmm(z_t, h, weights[1].t()))
    return h, {"h": h}


def elman_layer_manual(
    x: Tensor, h0: Tensor, weights: Weights, nonlinearity: str
) -> tuple[Tensor, Tensor]:
    """:class:`ElmanBPTT`, made to follow autocast as nn.RNN does.

    Autocast would cast each product inside the function separately and mix
    dtypes with the in-place updates, so the inputs are cast once up front.
    """
    tensors = (x, h0, *weights)
    device_type = x.device.type
    if not torch.is_autocast_enabled(device_type):
        return ElmanBPTT.apply(*tensors, nonlinearity)
    dtype = torch.get_autocast_dtype(device_type)
    tensors = tuple(t if t is None or not t.is_floating_point() else t.to(dtype) for t in tensors)
    with torch.autocast(device_type, enabled=False):
        return ElmanBPTT.apply(*tensors, nonlinearity)


_LAYERS = {"manual": elman_layer_manual, "autograd": elman_layer_autograd}


class CustomRNN(nn.Module):
    """Multi-layer Elman RNN with the interface, parameters and init of :class:`torch.nn.RNN`.

    ``bptt`` picks the backward: ``"manual"`` (hand-written, see the module
    docstring) or ``"autograd"`` (the cell unrolled under autograd).
    ``bidirectional`` and ``proj_size`` are accepted only to refuse them clearly.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        nonlinearity: str = "tanh",
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
        _check_arguments(
            input_size,
            hidden_size,
            num_layers,
            nonlinearity,
            dropout,
            bptt,
            bidirectional,
            proj_size,
        )
        if dropout > 0 and num_layers == 1:
            warnings.warn(
                "dropout acts between recurrent layers, so it has no effect with num_layers=1.",
                UserWarning,
                stacklevel=2,
            )
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.nonlinearity = nonlinearity
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = float(dropout)
        self.bptt = bptt
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        # Registration order is nn.RNN's, so that reset_parameters draws the same numbers.
        for layer in range(num_layers):
            layer_input = input_size if layer == 0 else hidden_size
            shapes = {
                "weight_ih": (hidden_size, layer_input),
                "weight_hh": (hidden_size, hidden_size),
            }
            if bias:
                shapes |= {"bias_ih": (hidden_size,), "bias_hh": (hidden_size,)}
            for name, shape in shapes.items():
                parameter = nn.Parameter(torch.empty(shape, **factory))
                self.register_parameter(f"{name}_l{layer}", parameter)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Uniform(-1/sqrt(H), 1/sqrt(H)) over every parameter in order, as nn.RNN."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for parameter in self.parameters():
            nn.init.uniform_(parameter, -bound, bound)

    def flatten_parameters(self) -> None:
        """No-op, for code written against nn.RNN (there is no cuDNN weight buffer here)."""

    def layer_parameters(self, layer: int) -> Weights:
        """``(W_ih, W_hh, b_ih, b_hh)`` of one layer; biases are ``None`` without bias."""
        w_ih, w_hh = getattr(self, f"weight_ih_l{layer}"), getattr(self, f"weight_hh_l{layer}")
        if not self.bias:
            return w_ih, w_hh, None, None
        return w_ih, w_hh, getattr(self, f"bias_ih_l{layer}"), getattr(self, f"bias_hh_l{layer}")

    def forward(self, input: Tensor, hx: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(output, h_n)`` exactly as nn.RNN returns them, for batched or unbatched input."""
        x, h0, unbatched = self._to_time_major(input, hx)
        run_layer = _LAYERS[self.bptt]
        finals = []
        for layer in range(self.num_layers):
            if layer > 0 and self.training and self.dropout > 0:
                x = F.dropout(x, self.dropout, training=True)
            x, h_n = run_layer(x, h0[layer], self.layer_parameters(layer), self.nonlinearity)
            finals.append(h_n)
        output, h_n = x, torch.stack(finals)
        if unbatched:
            return output.squeeze(1), h_n.squeeze(1)
        return (output.transpose(0, 1) if self.batch_first else output), h_n

    def _to_time_major(self, input: Tensor, hx: Tensor | None) -> tuple[Tensor, Tensor, bool]:
        """Input as (T, B, I), h0 as (L, B, H) (zeros if not given), and if it was unbatched."""
        if input.dim() not in (2, 3):
            raise ValueError(
                f"CustomRNN expects 2-D (unbatched) or 3-D input, got {input.dim()}-D."
            )
        if input.shape[-1] != self.input_size:
            raise ValueError(
                f"CustomRNN expects {self.input_size} input features, got {input.shape[-1]}."
            )
        unbatched = input.dim() == 2
        if unbatched:
            x = input.unsqueeze(1)
        else:
            x = input.transpose(0, 1) if self.batch_first else input
        if x.shape[0] == 0:
            raise ValueError("CustomRNN expects a sequence of at least one step.")
        expected = (self.num_layers, x.shape[1], self.hidden_size)
        if hx is None:
            return x, x.new_zeros(expected), unbatched
        h0 = hx.unsqueeze(1) if unbatched else hx
        if hx.dim() != input.dim() or h0.shape != expected:
            wanted = (self.num_layers, self.hidden_size) if unbatched else expected
            raise ValueError(f"CustomRNN expects hx of shape {wanted}, got {tuple(hx.shape)}.")
        return x, h0, unbatched

    def extra_repr(self) -> str:
        text = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            text += f", num_layers={self.num_layers}"
        if self.nonlinearity != "tanh":
            text += f", nonlinearity={self.nonlinearity!r}"
        if not self.bias:
            text += ", bias=False"
        if self.batch_first:
            text += ", batch_first=True"
        if self.dropout:
            text += f", dropout={self.dropout}"
        return text + f", bptt={self.bptt!r}"


def _check_arguments(
    input_size: int,
    hidden_size: int,
    num_layers: int,
    nonlinearity: str,
    dropout: float,
    bptt: str,
    bidirectional: bool,
    proj_size: int,
) -> None:
    """Refuse, with one sentence each, what CustomRNN cannot do."""
    if bidirectional:
        raise ValueError("CustomRNN does not support bidirectional=True; use torch.nn.RNN.")
    if proj_size:
        raise ValueError("CustomRNN does not support proj_size; it is an LSTM-only option.")
    sizes = {"input_size": input_size, "hidden_size": hidden_size, "num_layers": num_layers}
    for name, value in sizes.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"CustomRNN needs {name} to be a positive integer, got {value!r}.")
    if nonlinearity not in NONLINEARITIES:
        raise ValueError(f"CustomRNN nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}.")
    if bptt not in BPTT_MODES:
        raise ValueError(f"CustomRNN bptt must be 'manual' or 'autograd', got {bptt!r}.")
    if isinstance(dropout, bool) or not isinstance(dropout, numbers.Number):
        raise ValueError(f"CustomRNN dropout must be a number in [0, 1], got {dropout!r}.")
    if not 0 <= dropout <= 1:
        raise ValueError(f"CustomRNN dropout must be a number in [0, 1], got {dropout!r}.")
