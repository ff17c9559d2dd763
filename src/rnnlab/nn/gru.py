r"""A hand-written GRU, a drop-in for :class:`torch.nn.GRU`.

Shapes, noted once (``T`` steps, ``B`` batch, ``I`` input size, ``H`` hidden
size, ``L`` layers; ``batch_first=True`` swaps the first two axes of input and
output; unbatched input drops the ``B`` axis everywhere)::

    input   (T, B, I)        h0, h_n  (L, B, H)        output  (T, B, H)

One layer, gates in PyTorch's order r (reset), z (update), n (new): ``W_ih`` (3H, I)
and ``W_hh`` (3H, H) stack the three gates' weights, ``a`` and ``s`` are the input and
recurrent pre-activations, ``sigma`` the logistic function::

    a_t = x_t W_ih^T + b_ih              s_t = h_{t-1} W_hh^T + b_hh
    r_t = sigma(a_t^r + s_t^r)
    z_t = sigma(a_t^z + s_t^z)
    n_t = tanh(a_t^n + r_t * s_t^n)
    h_t = (1 - z_t) * n_t + z_t * h_{t-1}

The layer's output is ``(h_1 .. h_T)`` and its final state ``h_n = h_T``.
Layer ``k > 0`` reads layer ``k - 1``'s output, through dropout in training.

Backpropagation through time. With ``dy_t = dL/dh_t`` arriving from the output and
``g_t`` the total gradient reaching ``h_t``::

    g_T     = dy_T + dL/dh_n
    da^n    = g_t (1 - z_t) (1 - n_t^2)          ds^n = r_t da^n
    da^z    = ds^z = g_t (h_{t-1} - n_t) z_t (1 - z_t)
    da^r    = ds^r = da^n s_t^n r_t (1 - r_t)
    g_{t-1} = dy_{t-1} + g_t z_t + ds_t W_hh     t = T .. 2
    dL/dh_0 = g_1 z_1 + ds_1 W_hh

Only that chain is sequential. Everything else sums over steps, so it is one
matrix product over all ``T * B`` rows once the deltas are known::

    dL/dW_ih = sum_t da_t^T x_t        dL/dx_t = da_t W_ih        dL/db_ih = sum da
    dL/dW_hh = sum_t ds_t^T h_{t-1}                               dL/db_hh = sum ds

``bptt="manual"`` runs the forward without building an autograd graph and the
backward above (:class:`GRUBPTT`); ``bptt="autograd"`` unrolls the same cell under
autograd (:func:`gru_layer_autograd`). Both give the same numbers. The layer stack
around the cell is :class:`~rnnlab.nn.stack.RecurrentStack`, the same for every cell.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from rnnlab.nn.stack import RecurrentStack, Weights, input_projection, per_step, under_autocast


def project(x: Tensor, weights: Weights) -> Tensor:
    """``a_t`` for every step, with ``b_hh``'s r and z parts folded in: (T, B, I) -> (T, B, 3H).

    ``s_t^n`` must keep its own bias (``r_t`` multiplies it), so only r and z take it here.
    """
    w_ih, _, b_ih, b_hh = weights
    bias = None
    if b_ih is not None and b_hh is not None:
        hidden = b_hh.shape[0] // 3
        bias = torch.cat([b_ih[: 2 * hidden] + b_hh[: 2 * hidden], b_ih[2 * hidden :]])
    return input_projection(x, w_ih, bias)


class GRUBPTT(torch.autograd.Function):
    """One GRU layer over a whole sequence, with hand-written BPTT.

    ``apply(x, h0, w_ih, w_hh, b_ih, b_hh) -> (output, h_n)`` with ``x`` (T, B, I) and
    ``h0`` (B, H); the biases may both be ``None``. The forward builds no graph and saves
    the gates and ``s``; the backward is the module docstring's equations. Double
    backward is not supported.
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
    ) -> tuple[Tensor, Tensor]:
        x = x.contiguous()
        steps, batch, hidden = x.shape[0], x.shape[1], h0.shape[-1]
        # the input pre-activations, turned gate by gate into r, z and n as the steps go
        gates = project(x, (w_ih, w_hh, b_ih, b_hh))
        # s_t, whose r and z parts lack b_hh (folded into gates): only s^n is needed later
        s = x.new_empty(steps, batch, 3 * hidden)
        s_bias = (
            None if b_hh is None else torch.cat([b_hh.new_zeros(2 * hidden), b_hh[2 * hidden :]])
        )
        hs = x.new_empty(steps, batch, hidden)
        w_hh_t = w_hh.t()
        h = h0
        a_r, a_z, a_n = gates.split(hidden, dim=2)
        # Every step's views are made here, once: in the loop they would cost as much as the math.
        for a_rz, r, z, n, s_t, s_rz, s_n, h_t in zip(
            *per_step(gates[..., : 2 * hidden], a_r, a_z, a_n),
            *per_step(s, s[..., : 2 * hidden], s[..., 2 * hidden :], hs),
            strict=True,
        ):
            if s_bias is None:
                torch.mm(h, w_hh_t, out=s_t)
            else:
                torch.addmm(s_bias, h, w_hh_t, out=s_t)
            a_rz.add_(s_rz).sigmoid_()  # r_t, z_t
            n.addcmul_(r, s_n).tanh_()
            h = torch.lerp(n, h, z, out=h_t)  # h_t = n_t + z_t (h_{t-1} - n_t)
        ctx.save_for_backward(x, h0, w_ih, w_hh, hs, gates, s)
        return hs, hs[-1].clone()

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: Tensor, grad_hn: Tensor) -> tuple[Tensor | None, ...]:
        x, h0, w_ih, w_hh, hs, gates, s = ctx.saved_tensors
        need_x, need_h0, need_w_ih, need_w_hh, need_b_ih, need_b_hh = ctx.needs_input_grad
        hidden = hs.shape[-1]
        r, z, n = gates.split(hidden, dim=2)
        h_prev = torch.cat([h0.unsqueeze(0), hs[:-1]])
        # The local derivatives of every step at once, so that each step only multiplies:
        # da^n = g f_n, ds^z = g f_z, ds^r = da^n f_r, ds^n = da^n r.
        f_n = (1 - z) * (1 - n * n)
        f_z = (h_prev - n).mul_(z * (1 - z))
        f_r = s[..., 2 * hidden :] * r * (1 - r)
        ds = torch.empty_like(gates)  # the recurrent deltas ds^r, ds^z, ds^n of every step
        da_n = torch.empty_like(f_n)  # the input side's n delta (r and z: the same as ds)
        dy, f_n_s, f_z_s, f_r_s, r_s, z_s, da_n_s, ds_s, ds_r, ds_z, ds_n = per_step(
            grad_out, f_n, f_z, f_r, r, z, da_n, ds, *ds.split(hidden, dim=2)
        )
        g = dy[-1] + grad_hn
        for t in range(x.shape[0] - 1, -1, -1):
            torch.mul(g, f_n_s[t], out=da_n_s[t])
            torch.mul(g, f_z_s[t], out=ds_z[t])
            torch.mul(da_n_s[t], f_r_s[t], out=ds_r[t])
            torch.mul(da_n_s[t], r_s[t], out=ds_n[t])
            carried = g * z_s[t] if t == 0 else torch.addcmul(dy[t - 1], g, z_s[t])
            g = torch.addmm(carried, ds_s[t], w_hh)  # g_{t-1}, or dL/dh_0 after step 1
        # The input side's deltas are ds's r and z columns and da_n: each product in two parts.
        flat_ds, flat_da_n = ds.view(-1, 3 * hidden), da_n.view(-1, hidden)
        flat_ds_rz, flat_x = flat_ds[:, : 2 * hidden], x.view(flat_ds.shape[0], -1)
        grad_x = grad_w_ih = grad_b_ih = None
        if need_x:
            grad_x = torch.mm(flat_ds_rz, w_ih[: 2 * hidden])
            grad_x = grad_x.addmm_(flat_da_n, w_ih[2 * hidden :]).view_as(x)
        if need_w_ih:
            grad_w_ih = torch.cat(
                [torch.mm(flat_ds_rz.t(), flat_x), torch.mm(flat_da_n.t(), flat_x)]
            )
        if need_b_ih:
            grad_b_ih = torch.cat([flat_ds_rz.sum(0), flat_da_n.sum(0)])
        grad_w_hh = torch.mm(flat_ds.t(), h_prev.view(-1, hidden)) if need_w_hh else None
        grad_b_hh = flat_ds.sum(0) if need_b_hh else None
        return grad_x, g if need_h0 else None, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh


def gru_layer_autograd(x: Tensor, h0: Tensor, weights: Weights) -> tuple[Tensor, Tensor]:
    """The same layer as :class:`GRUBPTT`, unrolled under autograd (``unbind``, never ``x[t]``)."""
    h = h0
    hs = []
    for a in project(x, weights).unbind(0):
        h, _ = gru_step(a, h, weights)
        hs.append(h)
    return torch.stack(hs), h


def gru_step(a: Tensor, h: Tensor, weights: Weights) -> tuple[Tensor, dict[str, Tensor]]:
    """One step from ``h_{t-1}`` to ``h_t``, ``a`` a step of :func:`project`.

    Returns the new state and the gates ``r``, ``z`` and the candidate ``n`` by name,
    which is what :mod:`rnnlab.nn.dynamics` reads saturation from.
    """
    b_hh = weights[3]
    s = torch.mm(h, weights[1].t())
    a_r, a_z, a_n = a.chunk(3, dim=1)
    s_r, s_z, s_n = s.chunk(3, dim=1)
    if b_hh is not None:
        s_n = s_n + b_hh.chunk(3)[2]
    r, z = torch.sigmoid(a_r + s_r), torch.sigmoid(a_z + s_z)
    n = torch.tanh(a_n + r * s_n)
    return n + z * (h - n), {"r": r, "z": z, "n": n}


def gru_layer_manual(x: Tensor, h0: Tensor, weights: Weights) -> tuple[Tensor, Tensor]:
    """:class:`GRUBPTT`, made to follow autocast as nn.GRU does."""
    return under_autocast(GRUBPTT.apply, x, h0, *weights)


_LAYERS = {"manual": gru_layer_manual, "autograd": gru_layer_autograd}


class CustomGRU(RecurrentStack):
    """Multi-layer GRU with the interface, parameters and init of :class:`torch.nn.GRU`
    (the stack around the cell: :class:`~rnnlab.nn.stack.RecurrentStack`)."""

    gates = 3
    builtin = "torch.nn.GRU"

    def layer(self, x: Tensor, state: Tensor, weights: Weights) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        return _LAYERS[self.bptt](x, state, weights)
