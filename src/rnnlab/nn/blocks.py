r"""Pre-norm residual blocks, what modern recurrent LMs (and the Transformer) stack.

Shapes, noted once: the residual stream ``x`` is time-major ``(T, B, D)``, ``D`` the
model's width (``hidden_size``). Each block::

    u = LN_1(x)
    u = conv(u)                     optional: causal and depthwise, each channel a weighted
                                    sum of its last k inputs (conv_kernel = k, 0 for none)
    x = x + dropout(mixer(u))       one layer of any cell (rnnlab.nn.cores), width D -> D
    x = x + dropout(MLP(LN_2(x)))   MLP(v) = W_2 gelu(W_1 v + b_1) + b_2, D -> r D -> D
                                    (mlp_ratio = r, 0 for none)

and the stack of blocks ends in a final LayerNorm.

The state a block carries from one window to the next is its mixer's (``h``, or ``(h, c)``
for an LSTM) and, with a convolution, the last ``k - 1`` inputs the convolution saw: a
window then continues exactly where the last one ended, as a stacked core's does. The
stack's state is the tuple of its blocks' states; :func:`rnnlab.nn.cores.detached` and
the checkpoints take it as any other state (nested tuples of tensors).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

#: one block's state: its mixer's, and with a convolution the conv's last k - 1 inputs
BlockState = tuple[Any, ...]


class CausalConv(nn.Module):
    """Depthwise causal convolution over time: ``y_t = sum_j w_j * u_{t-j} + b``, per channel."""

    def __init__(self, width: int, kernel: int) -> None:
        super().__init__()
        self.kernel = kernel
        self.conv = nn.Conv1d(width, width, kernel, groups=width)

    def forward(self, u: Tensor, past: Tensor | None) -> tuple[Tensor, Tensor]:
        """``u`` (T, B, D) and the last ``k - 1`` inputs before it (zeros at the start) ->
        ``(y (T, B, D), the last k - 1 inputs now)``."""
        if past is None:
            past = u.new_zeros(self.kernel - 1, *u.shape[1:])
        padded = torch.cat([past, u])  # (T + k - 1, B, D)
        y = self.conv(padded.permute(1, 2, 0)).permute(2, 0, 1)
        return y, padded[padded.shape[0] - (self.kernel - 1) :]


class Block(nn.Module):
    """One pre-norm residual block around ``mixer`` (see the module docstring)."""

    def __init__(
        self, mixer: nn.Module, width: int, mlp_ratio: int, conv_kernel: int, dropout: float
    ) -> None:
        super().__init__()
        self.norm_mixer = nn.LayerNorm(width)
        self.conv = CausalConv(width, conv_kernel) if conv_kernel else None
        self.mixer = mixer
        self.norm_mlp = nn.LayerNorm(width) if mlp_ratio else None
        self.mlp = (
            nn.Sequential(
                nn.Linear(width, mlp_ratio * width), nn.GELU(), nn.Linear(mlp_ratio * width, width)
            )
            if mlp_ratio
            else None
        )
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, state: BlockState | None) -> tuple[Tensor, BlockState]:
        mixer_state, past = (None, None) if state is None else (state[0], state[1:])
        u, memory = self.mixer_input(x, past[0] if past else None)
        mixed, mixer_state = self.mixer(u, mixer_state)
        new_state = (mixer_state,) if memory is None else (mixer_state, memory)
        return self.after_mixer(x, mixed), new_state

    def mixer_input(self, x: Tensor, past: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """``u = LN_1(x)``, through the convolution if there is one (``past``: its memory,
        None at the start), and the convolution's memory after it."""
        u = self.norm_mixer(x)
        if self.conv is None:
            return u, None
        return self.conv(u, past)

    def after_mixer(self, x: Tensor, mixed: Tensor) -> Tensor:
        """The two residual additions around the MLP, given the mixer's output."""
        x = x + self.dropout(mixed)
        if self.mlp is not None and self.norm_mlp is not None:
            x = x + self.dropout(self.mlp(self.norm_mlp(x)))
        return x


class Blocks(nn.Module):
    """``num_layers`` blocks and a final LayerNorm; the call of a stacked core:
    ``output, state = blocks(x (T, B, D), state=None)``."""

    def __init__(
        self,
        mixer: Callable[[], nn.Module],
        width: int,
        num_layers: int,
        mlp_ratio: int,
        conv_kernel: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            Block(mixer(), width, mlp_ratio, conv_kernel, dropout) for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(width)

    def forward(self, x: Tensor, state: tuple[BlockState, ...] | None = None) -> tuple[Tensor, Any]:
        states = []
        for k, block in enumerate(self.blocks):
            x, block_state = block(x, None if state is None else state[k])
            states.append(block_state)
        return self.norm(x), tuple(states)
