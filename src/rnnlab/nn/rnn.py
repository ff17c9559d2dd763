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

from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from rnnlab.nn.stack import (
    RecurrentStack,
    Weights,
    folded_bias,
    input_projection,
    under_autocast,
)

NONLINEARITIES = ("tanh", "relu")


def project(x: Tensor, weights: Weights) -> Tensor:
    """``x_t W_ih^T + b_ih + b_hh`` for every step: (T, B, I) -> (T, B, H)."""
    return input_projection(x, weights[0], folded_bias(weights[2], weights[3]))


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
        hs = project(x, (w_ih, w_hh, b_ih, b_hh))
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


def elman_layer_autograd(
    x: Tensor, h0: Tensor, weights: Weights, nonlinearity: str
) -> tuple[Tensor, Tensor]:
    """The same layer as :class:`ElmanBPTT`, unrolled under autograd.

    Looping over ``unbind`` (not ``x[t]``) matters: indexing makes autograd
    write a full-size zero tensor per step in the backward.
    """
    h = h0
    hs = []
    for z_t in project(x, weights).unbind(0):
        h, _ = elman_step(z_t, h, weights, nonlinearity)
        hs.append(h)
    return torch.stack(hs), h


def elman_step(
    z_t: Tensor, h: Tensor, weights: Weights, nonlinearity: str
) -> tuple[Tensor, dict[str, Tensor]]:
    """One step ``h_t = phi(z_t + h_{t-1} W_hh^T)``, ``z_t`` a step of :func:`project`.

    Returns the new state and the cell's activations by name (here only ``h``), which
    is what :mod:`rnnlab.nn.dynamics` reads saturation from.
    """
    activation = torch.tanh if nonlinearity == "tanh" else torch.relu
    h = activation(torch.addmm(z_t, h, weights[1].t()))
    return h, {"h": h}


def elman_layer_manual(
    x: Tensor, h0: Tensor, weights: Weights, nonlinearity: str
) -> tuple[Tensor, Tensor]:
    """:class:`ElmanBPTT`, made to follow autocast as nn.RNN does."""
    return under_autocast(lambda *t: ElmanBPTT.apply(*t, nonlinearity), x, h0, *weights)


_LAYERS = {"manual": elman_layer_manual, "autograd": elman_layer_autograd}


class CustomRNN(RecurrentStack):
    """Multi-layer Elman RNN with the interface, parameters and init of :class:`torch.nn.RNN`
    (the stack around the cell: :class:`~rnnlab.nn.stack.RecurrentStack`)."""

    gates = 1
    builtin = "torch.nn.RNN"

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        nonlinearity: str = "tanh",
        *args: Any,
        **kwargs: Any,
    ) -> None:
        if nonlinearity not in NONLINEARITIES:
            raise ValueError(
                f"CustomRNN nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}."
            )
        self.nonlinearity = nonlinearity
        super().__init__(input_size, hidden_size, num_layers, *args, **kwargs)

    def layer(self, x: Tensor, state: Tensor, weights: Weights) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        return _LAYERS[self.bptt](x, state, weights, self.nonlinearity)

    def _cell_repr(self) -> str:
        return "" if self.nonlinearity == "tanh" else f", nonlinearity={self.nonlinearity!r}"
