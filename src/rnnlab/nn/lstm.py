r"""A hand-written LSTM, a drop-in for :class:`torch.nn.LSTM`.

Shapes, noted once (``T`` steps, ``B`` batch, ``I`` input size, ``H`` hidden
size, ``L`` layers; ``batch_first=True`` swaps the first two axes of input and
output; unbatched input drops the ``B`` axis everywhere)::

    input   (T, B, I)        h0, c0, h_n, c_n  (L, B, H)        output  (T, B, H)

One layer, gates in PyTorch's order i (input), f (forget), g (cell), o (output):
``W_ih`` (4H, I) and ``W_hh`` (4H, H) stack the four gates' weights, ``a`` is a gate's
pre-activation, ``sigma`` the logistic function::

    a_t = x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh
    i_t = sigma(a_t^i)    f_t = sigma(a_t^f)    g_t = tanh(a_t^g)    o_t = sigma(a_t^o)
    c_t = f_t * c_{t-1} + i_t * g_t
    h_t = o_t * tanh(c_t)

The layer's output is ``(h_1 .. h_T)`` and its final state ``(h_n, c_n) = (h_T, c_T)``.
Layer ``k > 0`` reads layer ``k - 1``'s output, through dropout in training.

Backpropagation through time. With ``dy_t = dL/dh_t`` arriving from the output,
``g_t`` and ``e_t`` the total gradients reaching ``h_t`` and ``c_t``, and ``k_t = tanh(c_t)``::

    g_T     = dy_T + dL/dh_n                    e_T = dL/dc_n + g_T o_T (1 - k_T^2)
    da^o    = g_t k_t o_t (1 - o_t)
    da^i    = e_t g_t i_t (1 - i_t)             da^g = e_t i_t (1 - g_t^2)
    da^f    = e_t c_{t-1} f_t (1 - f_t)
    g_{t-1} = dy_{t-1} + da_t W_hh              e_{t-1} = e_t f_t + g_{t-1} o_{t-1} (1 - k_{t-1}^2)
    dL/dh_0 = da_1 W_hh                         dL/dc_0 = e_1 f_1

Only that chain is sequential. Everything else sums over steps, so it is one
matrix product over all ``T * B`` rows once the deltas are known::

    dL/dW_ih = sum_t da_t^T x_t        dL/dx_t = da_t W_ih
    dL/dW_hh = sum_t da_t^T h_{t-1}    dL/db_ih = dL/db_hh = sum_t sum_batch da_t

``bptt="manual"`` runs the forward without building an autograd graph and the
backward above (:class:`LSTMBPTT`); ``bptt="autograd"`` unrolls the same cell under
autograd (:func:`lstm_layer_autograd`). Both give the same numbers. The layer stack
around the cell is :class:`~rnnlab.nn.stack.RecurrentStack`, the same for every cell.
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
    per_step,
    under_autocast,
)

#: an LSTM layer's state ``(h, c)``
State = tuple[Tensor, Tensor]


def project(x: Tensor, weights: Weights) -> Tensor:
    """``x_t W_ih^T + b_ih + b_hh`` for every step: (T, B, I) -> (T, B, 4H)."""
    return input_projection(x, weights[0], folded_bias(weights[2], weights[3]))


class LSTMBPTT(torch.autograd.Function):
    """One LSTM layer over a whole sequence, with hand-written BPTT.

    ``apply(x, h0, c0, w_ih, w_hh, b_ih, b_hh) -> (output, h_n, c_n)`` with ``x``
    (T, B, I), ``h0`` and ``c0`` (B, H); the biases may both be ``None``. The forward
    builds no graph and saves the gates, the cell states and their tanh; the backward
    is the module docstring's equations. Double backward is not supported.
    """

    @staticmethod
    def forward(
        ctx: Any,
        x: Tensor,
        h0: Tensor,
        c0: Tensor,
        w_ih: Tensor,
        w_hh: Tensor,
        b_ih: Tensor | None,
        b_hh: Tensor | None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        x = x.contiguous()
        steps, batch, hidden = x.shape[0], x.shape[1], h0.shape[-1]
        # the pre-activations without their recurrent term; each step adds it, then squashes
        gates = project(x, (w_ih, w_hh, b_ih, b_hh))
        hs, cs, ks = (x.new_empty(steps, batch, hidden) for _ in range(3))
        w_hh_t = w_hh.t()
        h, c = h0, c0
        # Every step's views are made here, once: in the loop they would cost as much as the math.
        for a, a_if, i, f, g, o, h_t, c_t, k_t in zip(
            *per_step(gates),
            *per_step(gates[..., : 2 * hidden], *gates.split(hidden, dim=2)),
            *per_step(hs, cs, ks),
            strict=True,
        ):
            a.addmm_(h, w_hh_t)
            a_if.sigmoid_()
            g.tanh_()
            o.sigmoid_()
            c = torch.mul(f, c, out=c_t).addcmul_(i, g)  # c_t = f_t c_{t-1} + i_t g_t
            h = torch.mul(o, torch.tanh(c, out=k_t), out=h_t)  # h_t = o_t tanh(c_t)
        ctx.save_for_backward(x, h0, c0, w_ih, w_hh, hs, cs, ks, gates)
        return hs, hs[-1].clone(), cs[-1].clone()

    @staticmethod
    @once_differentiable
    def backward(
        ctx: Any, grad_out: Tensor, grad_hn: Tensor, grad_cn: Tensor
    ) -> tuple[Tensor | None, ...]:
        x, h0, c0, w_ih, w_hh, hs, cs, ks, gates = ctx.saved_tensors
        need_x, need_h0, need_c0, need_w_ih, need_w_hh, need_b_ih, need_b_hh = ctx.needs_input_grad
        steps, batch, hidden = hs.shape
        i, f, g, o = gates.split(hidden, dim=2)
        c_prev = torch.cat([c0.unsqueeze(0), cs[:-1]])
        # The local derivatives of every step at once, so that each step only multiplies:
        # e_t += g_t dk, da^{i,f,g} = e_t (p_i, p_f, p_g), da^o = g_t p_o.
        dk = o * (1 - ks * ks)
        p = torch.empty_like(gates)
        p_i, p_f, p_g, p_o = p.split(hidden, dim=2)
        torch.mul(g, i * (1 - i), out=p_i)
        torch.mul(c_prev, f * (1 - f), out=p_f)
        torch.mul(i, 1 - g * g, out=p_g)
        torch.mul(ks, o * (1 - o), out=p_o)
        p_ifg = p.view(steps, batch, 4, hidden)[:, :, :3]
        da = torch.empty_like(gates)  # the pre-activation deltas of every step
        da_ifg, da_o = da.view(steps, batch, 4, hidden)[:, :, :3], da[..., 3 * hidden :]
        dy, dk_s, p_ifg_s, p_o_s, da_ifg_s, da_o_s, da_s, f_s = per_step(
            grad_out, dk, p_ifg, p_o, da_ifg, da_o, da, f
        )
        g_h, e = dy[-1] + grad_hn, grad_cn.clone()
        for t in range(steps - 1, -1, -1):
            e.addcmul_(g_h, dk_s[t])  # e_t: from c_{t+1} and through h_t
            torch.mul(e.unsqueeze(1), p_ifg_s[t], out=da_ifg_s[t])
            torch.mul(g_h, p_o_s[t], out=da_o_s[t])
            e.mul_(f_s[t])  # the part of e_{t-1} that flows through c
            if t > 0:
                g_h = torch.addmm(dy[t - 1], da_s[t], w_hh)  # g_{t-1}
        g_h = torch.mm(da_s[0], w_hh)  # dL/dh_0
        flat = da.view(-1, 4 * hidden)
        h_prev = torch.cat([h0.unsqueeze(0), hs[:-1]]).view(-1, hidden)

        grad_x = torch.mm(flat, w_ih).view_as(x) if need_x else None
        grad_w_ih = torch.mm(flat.t(), x.view(flat.shape[0], -1)) if need_w_ih else None
        grad_w_hh = torch.mm(flat.t(), h_prev) if need_w_hh else None
        # One tensor for both biases is safe: autograd copies it before accumulating in place.
        grad_b = flat.sum(0) if need_b_ih or need_b_hh else None
        return (
            grad_x,
            g_h if need_h0 else None,
            e if need_c0 else None,
            grad_w_ih,
            grad_w_hh,
            grad_b if need_b_ih else None,
            grad_b if need_b_hh else None,
        )


def lstm_layer_autograd(x: Tensor, state: State, weights: Weights) -> tuple[Tensor, State]:
    """The same layer as :class:`LSTMBPTT`, unrolled under autograd (``unbind``, never ``x[t]``)."""
    hs = []
    for a in project(x, weights).unbind(0):
        state, _ = lstm_step(a, state, weights)
        hs.append(state[0])
    return torch.stack(hs), state


def lstm_step(a: Tensor, state: State, weights: Weights) -> tuple[State, dict[str, Tensor]]:
    """One step from ``(h_{t-1}, c_{t-1})`` to ``(h_t, c_t)``, ``a`` a step of
    :func:`project`.

    Returns the new state and the gates ``i``, ``f``, ``g``, ``o`` and ``tanh_c``
    (``tanh(c_t)``) by name, which is what :mod:`rnnlab.nn.dynamics` reads saturation from.
    """
    h, c = state
    i, f, g, o = torch.addmm(a, h, weights[1].t()).chunk(4, dim=1)
    i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
    c = f * c + i * g
    tanh_c = torch.tanh(c)
    return (o * tanh_c, c), {"i": i, "f": f, "g": g, "o": o, "tanh_c": tanh_c}


def lstm_layer_manual(x: Tensor, state: State, weights: Weights) -> tuple[Tensor, State]:
    """:class:`LSTMBPTT`, made to follow autocast as nn.LSTM does."""
    output, h_n, c_n = under_autocast(LSTMBPTT.apply, x, *state, *weights)
    return output, (h_n, c_n)


_LAYERS = {"manual": lstm_layer_manual, "autograd": lstm_layer_autograd}


class CustomLSTM(RecurrentStack):
    """Multi-layer LSTM with the interface, parameters and init of :class:`torch.nn.LSTM`
    (the stack around the cell: :class:`~rnnlab.nn.stack.RecurrentStack`)."""

    gates = 4
    state_size = 2
    builtin = "torch.nn.LSTM"

    def layer(self, x: Tensor, state: State, weights: Weights) -> tuple[Tensor, State]:  # type: ignore[override]
        return _LAYERS[self.bptt](x, state, weights)
