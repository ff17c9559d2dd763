r"""A layer of a cell linear in its state: projection, gates, scan; with hand-written BPTT.

minGRU and minLSTM (:mod:`rnnlab.nn.mingru`, :mod:`rnnlab.nn.minlstm`) compute their gates
from the input alone, so a layer is three whole-sequence steps::

    p_t = x_t W_ih^T + b_ih                      (T, B, G*H): one product for every step
    a_t, b_t = coefficients(p_t)                 the cell's gates, elementwise
    h_t = a_t * h_{t-1} + b_t                    rnnlab.nn.scan, sequential or parallel

and its backward the same three in reverse: the scan's backward gives ``dL/da`` and
``dL/db`` (:mod:`rnnlab.nn.scan`), the cell turns them into ``dL/dp`` (its
``coefficient_grads``), and the weight, bias and input gradients are one product each::

    dL/dW_ih = sum_t dp_t^T x_t      dL/db_ih = sum_t sum_batch dp_t      dL/dx_t = dp_t W_ih

Only that plumbing is here, once for every such cell; a cell's file holds its gates.
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from rnnlab.nn.scan import SCANS, scan, scan_backward
from rnnlab.nn.stack import RecurrentStack, Weights, input_projection, under_autocast


class Gates(Protocol):
    """A linear cell's math: its coefficients from the pre-activations, and back."""

    @staticmethod
    def coefficients(p: Tensor) -> tuple[Tensor, Tensor, tuple[Tensor, ...]]:
        """``(a, b, saved)`` from ``p`` (T, B, G*H); ``saved`` is what the backward needs."""
        ...

    @staticmethod
    def coefficient_grads(saved: tuple[Tensor, ...], grad_a: Tensor, grad_b: Tensor) -> Tensor:
        """``dL/dp`` (T, B, G*H) from ``dL/da`` and ``dL/db``."""
        ...


class LinearBPTT(torch.autograd.Function):
    """One layer of a linear cell over a whole sequence, with hand-written BPTT.

    ``apply(x, h0, w_ih, b_ih, gates, mode) -> (output, h_n)`` with ``x`` (T, B, I) and
    ``h0`` (B, H); ``b_ih`` may be ``None``. The forward builds no graph; the backward is
    the module docstring's. Double backward is not supported.
    """

    @staticmethod
    def forward(
        ctx: Any, x: Tensor, h0: Tensor, w_ih: Tensor, b_ih: Tensor | None, gates: Gates, mode: str
    ) -> tuple[Tensor, Tensor]:
        x = x.contiguous()
        a, b, saved = gates.coefficients(input_projection(x, w_ih, b_ih))
        hs = scan(a, b, h0, mode)
        ctx.gates, ctx.mode = gates, mode
        ctx.save_for_backward(x, h0, w_ih, hs, a, *saved)
        return hs, hs[-1].clone()

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: Tensor, grad_hn: Tensor) -> tuple[Tensor | None, ...]:
        x, h0, w_ih, hs, a, *saved = ctx.saved_tensors
        need_x, need_h0, need_w_ih, need_b_ih, _, _ = ctx.needs_input_grad
        g = grad_out.clone()
        g[-1] += grad_hn
        grad_a, grad_b, grad_h0 = scan_backward(a, h0, hs, g, ctx.mode)
        dp = ctx.gates.coefficient_grads(tuple(saved), grad_a, grad_b)
        flat = dp.reshape(-1, dp.shape[-1])
        grad_x = torch.mm(flat, w_ih).view_as(x) if need_x else None
        grad_w_ih = torch.mm(flat.t(), x.view(flat.shape[0], -1)) if need_w_ih else None
        grad_b_ih = flat.sum(0) if need_b_ih else None
        return grad_x, grad_h0 if need_h0 else None, grad_w_ih, grad_b_ih, None, None


def linear_layer_manual(
    x: Tensor, h0: Tensor, weights: Weights, gates: Gates, mode: str
) -> tuple[Tensor, Tensor]:
    """:class:`LinearBPTT`, made to follow autocast."""
    w_ih, _, b_ih, _ = weights
    return under_autocast(lambda *t: LinearBPTT.apply(*t, gates, mode), x, h0, w_ih, b_ih)


def linear_layer_autograd(
    x: Tensor, h0: Tensor, weights: Weights, gates: Gates, mode: str
) -> tuple[Tensor, Tensor]:
    """The same layer under autograd, through the same scan."""
    w_ih, _, b_ih, _ = weights
    a, b, _ = gates.coefficients(input_projection(x, w_ih, b_ih))
    hs = scan(a, b, h0, mode)
    return hs, hs[-1]


_LAYERS = {"manual": linear_layer_manual, "autograd": linear_layer_autograd}


class LinearStack(RecurrentStack):
    """The layer stack of a cell linear in its state: ``W_ih`` and ``b_ih`` only, and a
    ``scan`` option (``"sequential"``, the fast one on a CPU, or ``"parallel"``)."""

    recurrent = False
    #: the cell's gate math, :class:`Gates`
    math: ClassVar[Gates]

    def __init__(self, *args: Any, scan: str = "sequential", **kwargs: Any) -> None:
        if scan not in SCANS:
            raise ValueError(
                f"{type(self).__name__} scan must be 'sequential' or 'parallel', got {scan!r}."
            )
        self.scan = scan
        super().__init__(*args, **kwargs)

    def layer(self, x: Tensor, state: Tensor, weights: Weights) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        return _LAYERS[self.bptt](x, state, weights, self.math, self.scan)

    def _cell_repr(self) -> str:
        return f", scan={self.scan!r}"
