"""Training with a sparse input-table gradient (``model.sparse_embedding``).

Only some optimizers take a sparse gradient, and none with weight decay: torch says so at
the first step with a stack trace, :func:`check_sparse_optimizer` before it in a sentence.
``torch.nn.utils.clip_grad_norm_`` refuses a sparse gradient. A coalesced sparse
gradient's values are exactly the nonzero rows of the dense one, so the norm over them
and the clamp or rescaling of them are the dense clipping's numbers, without the
``V x E`` zeros (:func:`clip_gradients_`).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from rnnlab.errors import UserError

#: the optimizers that update a parameter from a sparse gradient (Adam and most others refuse)
SPARSE_OPTIMIZERS = (torch.optim.SGD, torch.optim.Adagrad)
#: what torch.nn.utils.clip_grad_norm_ adds to the norm before dividing by it
EPS = 1e-6


def check_sparse_optimizer(optimizer: torch.optim.Optimizer) -> None:
    """One sentence for an optimizer that cannot take the table's sparse gradient."""
    if not isinstance(optimizer, SPARSE_OPTIMIZERS):
        raise UserError(
            f"model.sparse_embedding=true needs an optimizer that takes sparse gradients "
            f"(torch.optim.SGD or Adagrad), not {type(optimizer).__name__}; set "
            "model.sparse_embedding=false or model.optimizer._target_=torch.optim.SGD."
        )
    if any(group.get("weight_decay", 0) for group in optimizer.param_groups):
        raise UserError(
            "model.sparse_embedding=true cannot be combined with weight decay, which torch's "
            "optimizers refuse for sparse gradients; set model.optimizer.weight_decay=0."
        )


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
