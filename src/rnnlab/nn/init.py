"""Recurrent initialisation: how ``W_hh`` starts decides how far gradients reach at first.

- ``pytorch``: the cores' own init, uniform in ``[-1/sqrt(H), 1/sqrt(H)]`` (nothing changes);
- ``orthogonal``: each gate's ``(H, H)`` block of ``W_hh`` a random orthogonal matrix times
  ``scale``, so every singular value is ``scale`` (Saxe, McClelland and Ganguli 2014);
- ``identity``: each block ``scale * I``; with ``nonlinearity=relu`` this is the IRNN of Le,
  Jaitly and Hinton (2015), which keeps the state (and its gradient) unchanged while the
  input is silent. The IRNN also starts its biases at zero: ``identity`` zeroes ``b_hh``
  and ``b_ih`` of an Elman core, and leaves a gated core's biases alone.

Only ``weight_hh_l<k>`` (and for ``identity`` an Elman core's biases) is touched, by
PyTorch's parameter names, so both backends start from the same weights with the same seed.
"""

from __future__ import annotations

import torch
from torch import nn

RECURRENT_INITS = ("pytorch", "orthogonal", "identity")


@torch.no_grad()
def init_recurrent(core: nn.Module, how: str, scale: float = 1.0) -> None:
    """Re-initialise each layer's ``W_hh`` of ``core`` (nn.RNN/GRU/LSTM or rnnlab's) in place."""
    if how == "pytorch":
        return
    hidden = core.hidden_size
    for layer in range(core.num_layers):
        weight = getattr(core, f"weight_hh_l{layer}")  # (G*H, H), G gates stacked
        for block in weight.split(hidden):
            if how == "orthogonal":
                nn.init.orthogonal_(block, gain=scale)
            else:
                block.copy_(scale * torch.eye(hidden, dtype=block.dtype))
        if how == "identity" and weight.shape[0] == hidden and core.bias:
            getattr(core, f"bias_hh_l{layer}").zero_()
            getattr(core, f"bias_ih_l{layer}").zero_()
