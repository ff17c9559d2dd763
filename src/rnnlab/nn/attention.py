r"""Causal multi-head self-attention with rotary positions: a residual block's mixer, as
PyTorch computes it (``backend="builtin"``) and written by hand (``backend="custom"``).

Shapes, noted once: the input ``x`` is time-major ``(T, B, D)`` like every mixer's; ``n``
heads of size ``d = D / n``; per head the queries, keys and values are ``(B, n, T, d)``::

    [q; k; v] = x W_qkv^T + b_qkv          W_qkv (3D, D), split into n heads each
    q_t, k_t <- R_t q_t, R_t k_t           rotary positions (Su et al. 2021): channels i and
                                           i + d/2 turned by the angle t * 10000^(-2i/d),
                                           t = 0 .. T-1 within the window
    S = q k^T / sqrt(d)                    (B, n, T, T)
    S_ts = -inf for s > t                  causal: a token reads itself and what came before
    P = softmax_s(S)                       each row sums to one
    O = P v                                (B, n, T, d)
    y = O W_o^T + b_o                      the heads side by side again, (T, B, D)

The rotation makes ``q_t . k_s`` depend on ``t - s`` alone, so a key keeps its meaning
wherever the window starts. Each training window attends within itself: nothing is
carried from one window to the next (the state is empty), where a recurrent mixer carries
its state across windows.

Backward of the attention itself (``q, k, v -> O``), hand-written in
:class:`CausalAttention` from ``dO = dL/dO``::

    dv = P^T dO                           (B, n, T, d)
    dP = dO v^T                           (B, n, T, T)
    dS = P * (dP - rowsum(dP * P))        the softmax's Jacobian, row by row; where the mask
                                          put -inf, P = 0 and so dS = 0
    dq = dS k / sqrt(d)                   dk = dS^T q / sqrt(d)

The projections and the rotation around it are linear maps that autograd differentiates.
The builtin backend calls ``torch.nn.functional.scaled_dot_product_attention`` with
``is_causal=True`` on the same projections and rotation: the same parameters, the same
numbers.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: the base of the rotary angles, as in RoFormer and most models since
ROPE_BASE = 10_000.0


def default_heads(width: int) -> int:
    """Heads of size 64 where the width divides by 64, else of the largest even size below
    64 that divides it (one head for a width under 64)."""
    for size in range(min(64, width), 1, -1):
        if width % size == 0 and size % 2 == 0:
            return width // size
    return 1


def rotate(x: Tensor) -> Tensor:
    """Rotary positions on ``x`` (B, n, T, d), ``d`` even: each channel pair ``(i, i + d/2)``
    of the step at position ``t`` turned by ``t * ROPE_BASE^(-2i/d)``."""
    steps, size = x.shape[-2], x.shape[-1]
    frequencies = ROPE_BASE ** (-torch.arange(0, size, 2, dtype=x.dtype, device=x.device) / size)
    angles = torch.arange(steps, dtype=x.dtype, device=x.device)[:, None] * frequencies
    cos, sin = angles.cos(), angles.sin()  # (T, d/2)
    first, second = x.chunk(2, dim=-1)
    return torch.cat([first * cos - second * sin, first * sin + second * cos], dim=-1)


class CausalAttention(torch.autograd.Function):
    """``apply(q, k, v) -> O``: causal softmax attention with the hand-written backward of
    the module docstring. ``q, k, v`` are ``(B, n, T, d)``."""

    @staticmethod
    def forward(ctx: Any, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        scale = 1.0 / math.sqrt(q.shape[-1])
        steps = q.shape[-2]
        future = torch.ones(steps, steps, dtype=torch.bool, device=q.device).triu(1)
        scores = torch.matmul(q, k.transpose(-2, -1)).mul_(scale).masked_fill_(future, -math.inf)
        p = torch.softmax(scores, dim=-1)
        ctx.scale = scale
        ctx.save_for_backward(q, k, v, p)
        return torch.matmul(p, v)

    @staticmethod
    def backward(ctx: Any, grad_o: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        q, k, v, p = ctx.saved_tensors
        grad_v = torch.matmul(p.transpose(-2, -1), grad_o)
        grad_p = torch.matmul(grad_o, v.transpose(-2, -1))
        grad_s = p * (grad_p - (grad_p * p).sum(-1, keepdim=True))
        grad_q = torch.matmul(grad_s, k).mul_(ctx.scale)
        grad_k = torch.matmul(grad_s.transpose(-2, -1), q).mul_(ctx.scale)
        return grad_q, grad_k, grad_v


def builtin_attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """PyTorch's fused causal attention on the same ``q, k, v``."""
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


#: the attention itself, by backend
ATTENTION = {"builtin": builtin_attention, "custom": CausalAttention.apply}


class SelfAttention(nn.Module):
    """Causal multi-head self-attention over a window, with rotary positions: a block's
    mixer, called as the cells are, ``y, state = mixer(x (T, B, D), state)``; the state is
    empty (``()``), since a window attends within itself."""

    def __init__(self, width: int, num_heads: int, backend: str = "builtin") -> None:
        super().__init__()
        if width % num_heads or (width // num_heads) % 2:
            raise ValueError(
                f"attention needs the width ({width}) to split into num_heads ({num_heads}) "
                "heads of an even size"
            )
        self.num_heads, self.backend = num_heads, backend
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)

    def forward(self, x: Tensor, state: tuple[()] | None = None) -> tuple[Tensor, tuple[()]]:
        steps, batch, width = x.shape
        heads = self.qkv(x).view(steps, batch, 3 * self.num_heads, -1).permute(1, 2, 0, 3)
        q, k, v = heads.chunk(3, dim=1)  # (B, n, T, d) each
        o = ATTENTION[self.backend](rotate(q), rotate(k), v)
        return self.out(o.permute(2, 0, 1, 3).reshape(steps, batch, width)), ()

    def extra_repr(self) -> str:
        return f"heads={self.num_heads}, backend={self.backend}"
