r"""minGRU (Feng et al. 2024, "Were RNNs All We Needed?"): a GRU whose gates read the input
alone, so the state enters linearly and every step can be computed at once.

Shapes, noted once (``T`` steps, ``B`` batch, ``I`` input size, ``H`` hidden size, ``L``
layers; ``batch_first`` and unbatched input as for the other cells)::

    input   (T, B, I)        h0, h_n  (L, B, H)        output  (T, B, H)

One layer. ``W_ih`` (2H, I) stacks the blocks of ``z`` and ``h~``, in that order; there is
no recurrent matrix, and ``sigma`` is the logistic function::

    z_t  = sigma(x_t W_z^T + b_z)          h~_t = x_t W_h^T + b_h
    h_t  = (1 - z_t) * h_{t-1} + z_t * h~_t  =  a_t * h_{t-1} + b_t
    a_t  = 1 - z_t                         b_t  = z_t * h~_t

``h`` is the linear recurrence of :mod:`rnnlab.nn.scan`, computed one step after another
or every step at once (``scan="sequential" | "parallel"``, the same numbers).

The paper's log-space form keeps ``h~`` positive through ``g(x) = x + 0.5`` for ``x >= 0``,
``sigmoid(x)`` below, because its scan takes logarithms of ``b``. rnnlab's parallel scan
multiplies and adds (recursive doubling), so it takes ``b`` of any sign, exactly: ``h~``
is the plain linear map of the paper's sequential form, and both scans compute it.

Backpropagation through time. The scan's backward gives ``dL/da_t = G_t h_{t-1}`` and
``dL/db_t = G_t``, ``G_t`` the total gradient reaching ``h_t`` (:mod:`rnnlab.nn.scan`);
with ``p`` the pre-activations, the rest is elementwise over the whole sequence::

    dL/dh~_t  = dL/db_t z_t                          = dL/dp^h_t
    dL/dz_t   = dL/db_t h~_t - dL/da_t               dL/dp^z_t = dL/dz_t z_t (1 - z_t)

and the products of :mod:`rnnlab.nn.linear` give ``dL/dW_ih``, ``dL/db_ih``, ``dL/dx``.
``bptt="manual"`` runs that backward; ``bptt="autograd"`` the same forward under autograd.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rnnlab.nn.linear import LinearStack
from rnnlab.nn.stack import Weights, input_projection


class MinGRUGates:
    """The gates of :class:`MinGRU`, as :class:`rnnlab.nn.linear.Gates`."""

    @staticmethod
    def coefficients(p: Tensor) -> tuple[Tensor, Tensor, tuple[Tensor, ...]]:
        p_z, candidate = p.chunk(2, dim=-1)
        z = torch.sigmoid(p_z)
        a = 1 - z
        return a, z * candidate, (z, a, candidate)

    @staticmethod
    def coefficient_grads(saved: tuple[Tensor, ...], grad_a: Tensor, grad_b: Tensor) -> Tensor:
        z, a, candidate = saved
        grad_p = grad_b.new_empty(*grad_b.shape[:-1], 2 * grad_b.shape[-1])
        grad_p_z, grad_candidate = grad_p.chunk(2, dim=-1)
        minus_grad_z = torch.addcmul(grad_a, grad_b, candidate, value=-1)  # -dL/dz
        torch.mul(minus_grad_z.mul_(z), a, out=grad_p_z).neg_()  # sigma' = z (1 - z)
        torch.mul(grad_b, z, out=grad_candidate)
        return grad_p


def project(x: Tensor, weights: Weights) -> Tensor:
    """``p_t = x_t W_ih^T + b_ih`` for every step: (T, B, I) -> (T, B, 2H)."""
    return input_projection(x, weights[0], weights[2])


def mingru_step(p: Tensor, h: Tensor, weights: Weights) -> tuple[Tensor, dict[str, Tensor]]:
    """One step from ``h_{t-1}`` to ``h_t``, ``p`` a step of :func:`project`; returns the new
    state and, by name, the gate ``z`` and the decay ``a = 1 - z`` (the step's Jacobian)."""
    a, b, (z, *_) = MinGRUGates.coefficients(p)
    return torch.addcmul(b, a, h), {"z": z, "a": a}


class MinGRU(LinearStack):
    """Multi-layer minGRU: the call and the stack of the other cells, ``W_ih`` of ``z, h~``."""

    gates = 2
    math = MinGRUGates
