r"""The linear recurrence ``h_t = a_t * h_{t-1} + b_t`` over a whole sequence, and its reverse.

Shapes, noted once: ``a``, ``b`` and the states ``h`` are ``(T, B, H)``; ``h0`` is ``(B, H)``.
Everything is elementwise: each of the ``B * H`` channels is its own scalar recurrence.

Two ways to compute the same numbers (``mode``):

- ``"sequential"``: one step after another, ``T`` fused multiply-adds of ``(B, H)``. On a
  CPU a step costs microseconds, so this is the fast one there.
- ``"parallel"``: every step at once, by recursive doubling (Hillis and Steele 1986).
  After round ``k`` each position holds the map ``h -> A h + B`` of the ``2^k`` steps
  ending there; combining a map with the one ``d`` steps before it is
  ``(A, B) <- (A * A', B + A * B')``. ``ceil(log2 T)`` rounds of whole-tensor operations,
  ``O(T log T)`` work: few launches, which is what a GPU wants. It multiplies and adds
  only, so it is exact to rounding for any sign of ``b`` and for ``a = 0``, unlike a
  log-space scan (``cumsum`` and ``logcumsumexp``, Heinsen 2023), which needs ``b > 0``
  or a split by sign, and loses digits to ``exp(log)`` (measured in
  ``scripts/bench_scan.py``).

The backward of a linear recurrence is the same recurrence run backwards in time. With
``g_t = dL/dh_t`` arriving from outside (the output, and ``dL/dh_n`` added at ``t = T``)
and ``G_t`` the total gradient reaching ``h_t``::

    G_T = g_T                G_t = g_t + a_{t+1} * G_{t+1}         t = T-1 .. 1
    dL/da_t = G_t * h_{t-1}        dL/db_t = G_t        dL/dh_0 = a_1 * G_1

:func:`scan_backward` gives all three. :func:`reverse_scan` computes ``G`` one step
after another, backwards, or with the doubling rounds run towards the start, with ``a``
shifted by one step. The gradients have both signs, which the doubling scan takes as they
are.
"""

from __future__ import annotations

import torch
from torch import Tensor

#: how the recurrence is computed: one step after another, or every step at once
SCANS = ("sequential", "parallel")


def scan(a: Tensor, b: Tensor, h0: Tensor, mode: str) -> Tensor:
    """Every ``h_t`` of ``h_t = a_t * h_{t-1} + b_t`` from ``h0``: (T, B, H)."""
    return sequential_scan(a, b, h0) if mode == "sequential" else parallel_scan(a, b, h0)


def sequential_scan(a: Tensor, b: Tensor, h0: Tensor) -> Tensor:
    """One step after another, out of place (so autograd can run through it too, and a
    step's fresh tensor costs less than a write into a slice: measured)."""
    hs, h = [], h0
    for a_t, b_t in zip(a.unbind(0), b.unbind(0), strict=True):
        h = torch.addcmul(b_t, a_t, h)
        hs.append(h)
    return torch.stack(hs)


def parallel_scan(a: Tensor, b: Tensor, h0: Tensor) -> Tensor:
    """Recursive doubling: after the round with offset ``d``, position ``t`` holds the map
    of steps ``t - 2d + 1 .. t``; once ``d >= T``, the map of every step from the start."""
    recording = _recording(a, b, h0)
    big_a, big_b = _doubling(a if recording else a.clone(), b if recording else b.clone())
    return torch.addcmul(big_b, big_a, h0)


def _doubling(big_a: Tensor, big_b: Tensor, reverse: bool = False) -> tuple[Tensor, Tensor]:
    """The doubling rounds, combining each position with the one ``d`` steps before it, or
    after it (``reverse``). Each round writes over the positions it moves on (2-3x faster
    than new tensors, measured), except when autograd records: then it builds new ones."""
    recording = _recording(big_a, big_b)
    offset = 1
    while offset < big_a.shape[0]:
        moved, source = slice(offset, None), slice(None, -offset)
        if reverse:
            moved, source = source, moved
        # each right-hand side is computed whole before it is placed: it reads old values
        new_b = torch.addcmul(big_b[moved], big_a[moved], big_b[source])
        new_a = big_a[moved] * big_a[source]
        big_b = _place(big_b, moved, new_b, recording)
        big_a = _place(big_a, moved, new_a, recording)
        offset *= 2
    return big_a, big_b


def _place(whole: Tensor, moved: slice, values: Tensor, recording: bool) -> Tensor:
    """``whole`` with ``values`` at ``moved`` (a slice from a start, or up to a stop):
    written into it, or, while autograd records, a new tensor around the positions kept."""
    if not recording:
        whole[moved] = values
        return whole
    if moved.start is not None:
        return torch.cat([whole[: moved.start], values])
    return torch.cat([values, whole[moved.stop :]])


def _recording(*tensors: Tensor) -> bool:
    """Whether autograd records operations on ``tensors`` (then nothing may be overwritten)."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def reverse_scan(a: Tensor, g: Tensor, mode: str) -> Tensor:
    """``G_t = g_t + a_{t+1} * G_{t+1}`` from ``G_T = g_T``: the scan run backwards in time.
    ``g`` is the caller's to give: both forms accumulate into it in place."""
    if mode == "sequential":
        for t in range(g.shape[0] - 2, -1, -1):
            g[t].addcmul_(a[t + 1], g[t + 1])
        return g
    shifted = torch.cat([a[1:], a.new_zeros(1, *a.shape[1:])])  # a_{t+1}, none after T
    return _doubling(shifted, g, reverse=True)[1]


def scan_backward(
    a: Tensor, h0: Tensor, hs: Tensor, g: Tensor, mode: str
) -> tuple[Tensor, Tensor, Tensor]:
    """``dL/da``, ``dL/db`` and ``dL/dh0`` from ``g = dL/dh`` (T, B, H), the caller's to give
    (it is overwritten), and the forward's ``a``, ``h0`` and states ``hs``."""
    total = reverse_scan(a, g, mode)  # G_t, the total gradient reaching h_t
    grad_a = torch.empty_like(total)  # G_t * h_{t-1}
    torch.mul(total[0], h0, out=grad_a[0])
    torch.mul(total[1:], hs[:-1], out=grad_a[1:])
    return grad_a, total, a[0] * total[0]
