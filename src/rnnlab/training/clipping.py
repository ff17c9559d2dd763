"""Gradient clipping that also takes sparse gradients (``model.sparse_embedding``).

``torch.nn.utils.clip_grad_norm_`` refuses a sparse gradient. A coalesced sparse
gradient's values are exactly the nonzero rows of the dense one, so the norm over them
and the clamp or rescaling of them are the dense clipping's numbers, without the
``V x E`` zeros.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

#: what torch.nn.utils.clip_grad_norm_ adds to the norm before dividing by it
EPS = 1e-6


def clip_gradients_(parameters: Iterable[nn.Parameter], clip_val: float, algorithm: str) -> None:
    """Clip every gradient in place as ``clip_grad_norm_`` (``algorithm="norm"``) or
    ``clip_grad_value_`` (``"value"``) would, coalescing the sparse ones first."""
    parts = [_dense_part(p) for p in parameters if p.grad is not None]
    if not parts:
        return
    if algorithm == "value":
        for g in parts:
            g.clamp_(-clip_val, clip_val)
        return
    total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in parts]))
    scale = (clip_val / (total + EPS)).clamp(max=1.0)
    for g in parts:
        g.mul_(scale)


def _dense_part(parameter: nn.Parameter) -> Tensor:
    """The gradient itself, or for a sparse one, coalesced, a view of its values."""
    grad = parameter.grad
    assert grad is not None
    if not grad.is_sparse:
        return grad
    parameter.grad = grad.coalesce()
    return parameter.grad.values()
