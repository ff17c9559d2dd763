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
its state across windows. Decoding (:func:`key_value_cache`) carries the keys and values
of the window so far instead, so that each new token costs one row of scores, not the
whole window again; the new queries then sit at the end of the keys (``s > t + T_k - T_q``
is masked).

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

import contextlib
import math
from collections.abc import Iterator
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


def rotate(x: Tensor, start: int = 0) -> Tensor:
    """Rotary positions on ``x`` (B, n, T, d), ``d`` even: each channel pair ``(i, i + d/2)``
    of the step at position ``t = start ..`` turned by ``t * ROPE_BASE^(-2i/d)``."""
    steps, size = x.shape[-2], x.shape[-1]
    frequencies = ROPE_BASE ** (-torch.arange(0, size, 2, dtype=x.dtype, device=x.device) / size)
    positions = torch.arange(start, start + steps, dtype=x.dtype, device=x.device)
    angles = positions[:, None] * frequencies
    cos, sin = angles.cos(), angles.sin()  # (T, d/2)
    first, second = x.chunk(2, dim=-1)
    return torch.cat([first * cos - second * sin, first * sin + second * cos], dim=-1)


def future_mask(queries: int, keys: int, device: torch.device) -> Tensor:
    """``(T_q, T_k)``, True where a query may not look: keys after it, the queries being
    the last ``T_q`` of the ``T_k`` positions."""
    return torch.ones(queries, keys, dtype=torch.bool, device=device).triu(1 + keys - queries)


class CausalAttention(torch.autograd.Function):
    """``apply(q, k, v) -> O``: causal softmax attention with the hand-written backward of
    the module docstring. ``q`` is ``(B, n, T_q, d)``, ``k`` and ``v`` ``(B, n, T_k, d)``
    with ``T_k >= T_q`` (the queries are the last ``T_q`` positions)."""

    @staticmethod
    def forward(ctx: Any, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        scale = 1.0 / math.sqrt(q.shape[-1])
        future = future_mask(q.shape[-2], k.shape[-2], q.device)
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
    """PyTorch's fused causal attention on the same ``q, k, v`` (its ``is_causal`` aligns
    the queries with the first keys, so a cache's longer keys take an explicit mask)."""
    if q.shape[-2] == k.shape[-2]:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    allowed = ~future_mask(q.shape[-2], k.shape[-2], q.device)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)


#: the attention itself, by backend
ATTENTION = {"builtin": builtin_attention, "custom": CausalAttention.apply}


class SelfAttention(nn.Module):
    """Causal multi-head self-attention over a window, with rotary positions: a block's
    mixer, called as the cells are, ``y, state = mixer(x (T, B, D), state)``. The state is
    empty (``()``): a window attends within itself. Under :func:`key_value_cache` it is
    the keys (rotated) and values of every step so far, each ``(B, n, T_k, d)``."""

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
        #: set by key_value_cache: carry the keys and values from call to call
        self.caching = False

    def forward(self, x: Tensor, state: tuple[Tensor, ...] | None = None) -> tuple[Tensor, Any]:
        steps, batch, width = x.shape
        heads = self.qkv(x).view(steps, batch, 3 * self.num_heads, -1).permute(1, 2, 0, 3)
        q, k, v = heads.chunk(3, dim=1)  # (B, n, T, d) each
        past = state if self.caching and state else None
        start = 0 if past is None else past[0].shape[-2]
        q, k = rotate(q, start), rotate(k, start)
        if past is not None:
            k, v = torch.cat([past[0], k], dim=-2), torch.cat([past[1], v], dim=-2)
        o = ATTENTION[self.backend](q, k, v)
        y = self.out(o.permute(2, 0, 1, 3).reshape(steps, batch, width))
        return y, ((k, v) if self.caching else ())

    def extra_repr(self) -> str:
        return f"heads={self.num_heads}, backend={self.backend}"


@contextlib.contextmanager
def key_value_cache(model: nn.Module) -> Iterator[None]:
    """Within it, ``model``'s attention mixers return their keys and values as their state
    and read them back, so that decoding feeds one token at a time (nothing changes for a
    recurrent model)."""
    mixers = [m for m in model.modules() if isinstance(m, SelfAttention)]
    for mixer in mixers:
        mixer.caching = True
    try:
        yield
    finally:
        for mixer in mixers:
            mixer.caching = False
