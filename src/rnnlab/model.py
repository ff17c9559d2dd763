"""RNNLM: embedding -> recurrent core -> dropout -> linear decoder.

The recurrent core is ``torch.nn.RNN`` (``backend="builtin"``) or rnnlab's
hand-written :class:`~rnnlab.rnn.CustomRNN` (``backend="custom"``); both take the
same arguments and hold the same parameters, so nothing else depends on which
one runs. The model knows sizes, not data: the vocabulary size comes in as a number.

Shapes: tokens ``(B, T)`` -> logits ``(B, T, V)``; hidden ``(L, B, H)``. The core
runs time-major, the layout both backends are fastest in.
"""

from __future__ import annotations

import torch
from torch import nn

from rnnlab.errors import UserError
from rnnlab.rnn import BPTT_MODES, NONLINEARITIES, CustomRNN

BACKENDS = ("builtin", "custom")


def recurrent_core(
    backend: str,
    input_size: int,
    hidden_size: int,
    num_layers: int,
    nonlinearity: str,
    dropout: float,
    bptt: str,
) -> nn.Module:
    """The recurrent layer stack for ``backend``; ``bptt`` only concerns the custom one."""
    if backend == "builtin":
        return nn.RNN(
            input_size, hidden_size, num_layers, nonlinearity=nonlinearity, dropout=dropout
        )
    return CustomRNN(
        input_size, hidden_size, num_layers, nonlinearity=nonlinearity, dropout=dropout, bptt=bptt
    )


class RNNLM(nn.Module):
    """An Elman-RNN language model whose recurrent core is chosen by ``backend``."""

    def __init__(
        self,
        vocab_size: int,
        embedding_dim: int | None = None,
        hidden_size: int = 256,
        num_layers: int = 1,
        nonlinearity: str = "tanh",
        dropout: float = 0.0,
        tie_weights: bool = False,
        backend: str = "builtin",
        bptt: str = "manual",
    ) -> None:
        super().__init__()
        embedding_dim = hidden_size if embedding_dim is None else embedding_dim
        check_config(
            vocab_size=vocab_size,
            embedding_dim=embedding_dim,
            hidden_size=hidden_size,
            num_layers=num_layers,
            nonlinearity=nonlinearity,
            dropout=dropout,
            tie_weights=tie_weights,
            backend=backend,
            bptt=bptt,
        )
        self.backend = backend
        self.embedding = nn.Embedding(vocab_size, embedding_dim)
        # Inside the core, dropout only acts between layers (both backends warn otherwise).
        core_dropout = dropout if num_layers > 1 else 0.0
        self.rnn = recurrent_core(
            backend, embedding_dim, hidden_size, num_layers, nonlinearity, core_dropout, bptt
        )
        self.dropout = nn.Dropout(dropout)
        self.decoder = nn.Linear(hidden_size, vocab_size)
        if tie_weights:
            self.decoder.weight = self.embedding.weight
        self.init_weights()

    def init_weights(self, scale: float = 0.1) -> None:
        """Embedding and decoder uniform in [-0.1, 0.1], decoder bias zero (as the PyTorch
        word_language_model example): nn.Embedding's N(0, 1) makes a tied decoder start with
        logits of size sqrt(H) and an initial loss far above ln(V). The core keeps nn.RNN's init.
        """
        nn.init.uniform_(self.embedding.weight, -scale, scale)
        nn.init.uniform_(self.decoder.weight, -scale, scale)
        nn.init.zeros_(self.decoder.bias)

    def forward(
        self, tokens: torch.Tensor, hidden: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        emb = self.dropout(self.embedding(tokens.t()))  # (T, B, E)
        output, hidden = self.rnn(emb, hidden)  # (T, B, H), (L, B, H)
        logits = self.decoder(self.dropout(output.transpose(0, 1)))  # (B, T, V)
        return logits, hidden


def check_config(
    *,
    vocab_size: int,
    embedding_dim: int,
    hidden_size: int,
    num_layers: int,
    nonlinearity: str,
    dropout: float,
    tie_weights: bool,
    backend: str,
    bptt: str,
) -> None:
    """Refuse impossible model settings with one sentence each, before building anything."""
    if backend not in BACKENDS:
        raise UserError(f"unknown model.backend {backend!r}; use one of: {', '.join(BACKENDS)}.")
    if nonlinearity not in NONLINEARITIES:
        raise UserError(
            f"unknown model.nonlinearity {nonlinearity!r}; use one of: {', '.join(NONLINEARITIES)}."
        )
    for name, value in (
        ("vocab_size", vocab_size),
        ("hidden_size", hidden_size),
        ("num_layers", num_layers),
        ("embedding_dim", embedding_dim),
    ):
        if value < 1:
            raise UserError(f"model.{name} must be at least 1, got {value}.")
    if bptt not in BPTT_MODES:
        raise UserError(f"unknown model.bptt {bptt!r}; use one of: {', '.join(BPTT_MODES)}.")
    if not 0.0 <= dropout < 1.0:
        raise UserError(f"model.dropout must be in [0, 1), got {dropout}.")
    if tie_weights and embedding_dim != hidden_size:
        raise UserError(
            f"model.tie_weights needs embedding_dim == hidden_size, got {embedding_dim} and "
            f"{hidden_size}; drop embedding_dim or set it to hidden_size."
        )
