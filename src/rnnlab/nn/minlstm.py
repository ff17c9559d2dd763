r"""minLSTM (Feng et al. 2024, "Were RNNs All We Needed?"): an LSTM whose gates read the input
alone, normalised so that the state stays on the scale of ``h~``, linear in the state.

Shapes, noted once (``T`` steps, ``B`` batch, ``I`` input size, ``H`` hidden size, ``L``
layers; ``batch_first`` and unbatched input as for the other cells)::

    input   (T, B, I)        h0, h_n  (L, B, H)        output  (T, B, H)

One layer. ``W_ih`` (3H, I) stacks the blocks of ``f``, ``i`` and ``h~``, in that order;
there is no recurrent matrix, and ``sigma`` is the logistic function::

    f_t  = sigma(x_t W_f^T + b_f)          i_t  = sigma(x_t W_i^T + b_i)
    s_t  = f_t + i_t                       f'_t = f_t / s_t        i'_t = i_t / s_t
    h~_t = x_t W_h^T + b_h
    h_t  = f'_t * h_{t-1} + i'_t * h~_t  =  a_t * h_{t-1} + b_t
    a_t  = f'_t                            b_t  = i'_t * h~_t

``h`` is the linear recurrence of :mod:`rnnlab.nn.scan`, one step after another or every
step at once (``scan="sequential" | "parallel"``, the same numbers). As in
:mod:`rnnlab.nn.mingru`, ``h~`` is the plain linear map, not the paper's positive ``g(x)``
of its log-space form: rnnlab's parallel scan takes ``b`` of any sign.

Backpropagation through time. The scan's backward gives ``dL/da_t = G_t h_{t-1}`` and
``dL/db_t = G_t`` (:mod:`rnnlab.nn.scan`); with ``p`` the pre-activations::

    dL/di'_t  = dL/db_t h~_t                  dL/dh~_t = dL/db_t i'_t    = dL/dp^h_t
    dL/df_t   = (dL/da_t - dL/di'_t) i_t / s_t^2
    dL/di_t   = (dL/di'_t - dL/da_t) f_t / s_t^2
    dL/dp^f_t = dL/df_t f_t (1 - f_t)         dL/dp^i_t = dL/di_t i_t (1 - i_t)

and the products of :mod:`rnnlab.nn.linear` give ``dL/dW_ih``, ``dL/db_ih``, ``dL/dx``.
``bptt="manual"`` runs that backward; ``bptt="autograd"`` the same forward under autograd.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rnnlab.nn.linear import LinearStack
from rnnlab.nn.stack import Weights, input_projection


class MinLSTMGates:
    """The gates of :class:`MinLSTM`, as :class:`rnnlab.nn.linear.Gates`."""

    @staticmethod
    def coefficients(p: Tensor) -> tuple[Tensor, Tensor, tuple[Tensor, ...]]:
        p_f, p_i, candidate = p.chunk(3, dim=-1)
        f, i = torch.sigmoid(p_f), torch.sigmoid(p_i)
        total = f + i
        a, i_norm = f / total, i / total
        return a, i_norm * candidate, (f, i, a, i_norm, candidate)

    @staticmethod
    def coefficient_grads(saved: tuple[Tensor, ...], grad_a: Tensor, grad_b: Tensor) -> Tensor:
        # with s = f + i, f' = f / s = a and i' = i / s: df'/df = -di'/df = i / s^2 and
        # df'/di = -di'/di = -f / s^2; with u = (dL/df' - dL/di') f' i' and the logistic's
        # derivative sigma (1 - sigma): dL/dp_f = u (1 - f), dL/dp_i = -u (1 - i)
        f, i, a, i_norm, candidate = saved
        grad_p = grad_b.new_empty(*grad_b.shape[:-1], 3 * grad_b.shape[-1])
        grad_p_f, grad_p_i, grad_candidate = grad_p.chunk(3, dim=-1)
        u = torch.addcmul(grad_a, grad_b, candidate, value=-1).mul_(a).mul_(i_norm)
        torch.addcmul(u, u, f, value=-1, out=grad_p_f)
        torch.addcmul(u, u, i, value=-1, out=grad_p_i).neg_()
        torch.mul(grad_b, i_norm, out=grad_candidate)
        return grad_p


def project(x: Tensor, weights: Weights) -> Tensor:
    """``p_t = x_t W_ih^T + b_ih`` for every step: (T, B, I) -> (T, B, 3H)."""
    return input_projection(x, weights[0], weights[2])


def minlstm_step(p: Tensor, h: Tensor, weights: Weights) -> tuple[Tensor, dict[str, Tensor]]:
    """One step from ``h_{t-1}`` to ``h_t``, ``p`` a step of :func:`project`; returns the new
    state and, by name, the gates ``f``, ``i`` and the decay ``a = f'`` (the step's Jacobian)."""
    a, b, (f, i, *_) = MinLSTMGates.coefficients(p)
    return torch.addcmul(b, a, h), {"f": f, "i": i, "a": a}


class MinLSTM(LinearStack):
    """Multi-layer minLSTM: the call and the stack of the other cells, ``W_ih`` of
    ``f, i, h~``."""

    gates = 3
    math = MinLSTMGates
