"""RNNLM: embedding -> recurrent core -> dropout -> output layer.

The recurrent core is ``torch.nn.RNN`` (``backend="builtin"``) or rnnlab's
hand-written :class:`~rnnlab.rnn.CustomRNN` (``backend="custom"``); both take the
same arguments and hold the same parameters, so nothing else depends on which
one runs. The model knows sizes, not data: the vocabulary size comes in as a number.

The output layer is a full softmax (``output="softmax"``, a linear decoder) or an
adaptive softmax (``output="adaptive"``, :class:`torch.nn.AdaptiveLogSoftmaxWithLoss`,
Grave et al. 2017): a head over the most frequent types plus clusters of rarer ones,
entered through small projections. Its probabilities are a proper distribution over
the whole vocabulary, so loss, perplexity and sampling are exact for that model;
training only pays for the cluster each target falls in. It needs ids ordered by
frequency, which :meth:`rnnlab.data.vocab.Vocab.build` guarantees.

Shapes: tokens ``(B, T)`` -> logits ``(B, T, V)`` (log-probabilities for the adaptive
output); hidden ``(L, B, H)``. The core runs time-major, the layout both backends are
fastest in.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from rnnlab.errors import UserError
from rnnlab.rnn import BPTT_MODES, NONLINEARITIES, CustomRNN

BACKENDS = ("builtin", "custom")
OUTPUTS = ("softmax", "adaptive")
#: the head holds the 2,000 most frequent types; each further cluster is five times larger
CUTOFF_STEPS = (2_000, 10_000, 50_000, 250_000)


def default_cutoffs(vocab_size: int) -> list[int]:
    """Cluster boundaries for an adaptive softmax over ``vocab_size`` frequency-sorted ids.

    WikiText-2 (33,278 types) gets ``[2000, 10000]``: the head alone covers 77% of its
    training tokens, head and first cluster 93%. A vocabulary under 2,000 types is cut in half.
    """
    return [c for c in CUTOFF_STEPS if c < vocab_size] or [max(1, vocab_size // 2)]


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
        output: str = "softmax",
        cutoffs: Sequence[int] | None = None,
        div_value: float = 4.0,
    ) -> None:
        super().__init__()
        embedding_dim = hidden_size if embedding_dim is None else embedding_dim
        cutoffs = default_cutoffs(vocab_size) if cutoffs is None else list(cutoffs)
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
            output=output,
            cutoffs=cutoffs,
            div_value=div_value,
        )
        self.backend, self.adaptive = backend, output == "adaptive"
        self.embedding = nn.Embedding(vocab_size, embedding_dim)
        # Inside the core, dropout only acts between layers (both backends warn otherwise).
        core_dropout = dropout if num_layers > 1 else 0.0
        self.rnn = recurrent_core(
            backend, embedding_dim, hidden_size, num_layers, nonlinearity, core_dropout, bptt
        )
        self.dropout = nn.Dropout(dropout)
        self.decoder: nn.Linear | nn.AdaptiveLogSoftmaxWithLoss
        if self.adaptive:
            self.decoder = nn.AdaptiveLogSoftmaxWithLoss(
                hidden_size, vocab_size, cutoffs, div_value=div_value
            )
        else:
            self.decoder = nn.Linear(hidden_size, vocab_size)
            if tie_weights:
                self.decoder.weight = self.embedding.weight
        self.init_weights()

    def init_weights(self, scale: float = 0.1) -> None:
        """Embedding and decoder uniform in [-0.1, 0.1], decoder bias zero (as the PyTorch
        word_language_model example): nn.Embedding's N(0, 1) makes a tied decoder start with
        logits of size sqrt(H) and an initial loss far above ln(V). The core keeps nn.RNN's
        init, the adaptive softmax its own.
        """
        nn.init.uniform_(self.embedding.weight, -scale, scale)
        if not self.adaptive:
            nn.init.uniform_(self.decoder.weight, -scale, scale)
            nn.init.zeros_(self.decoder.bias)

    def features(
        self, tokens: torch.Tensor, hidden: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """What the output layer reads: ``(B, T, H)`` after dropout, and the new hidden state."""
        emb = self.dropout(self.embedding(tokens.t()))  # (T, B, E)
        output, hidden = self.rnn(emb, hidden)  # (T, B, H), (L, B, H)
        return self.dropout(output.transpose(0, 1)), hidden

    def forward(
        self, tokens: torch.Tensor, hidden: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits ``(B, T, V)`` over the whole vocabulary (for sampling and inspection)."""
        feats, hidden = self.features(tokens, hidden)
        if self.adaptive:
            flat = self.decoder.log_prob(feats.reshape(-1, feats.size(-1)))
            return flat.view(*feats.shape[:2], -1), hidden
        return self.decoder(feats), hidden

    def loss(
        self, tokens: torch.Tensor, targets: torch.Tensor, hidden: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean NLL of ``targets`` over the batch, without the full ``(B, T, V)`` for adaptive."""
        feats, hidden = self.features(tokens, hidden)
        flat, flat_targets = feats.reshape(-1, feats.size(-1)), targets.reshape(-1)
        if self.adaptive:
            return self.decoder(flat, flat_targets).loss, hidden
        return F.cross_entropy(self.decoder(flat), flat_targets), hidden


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
    output: str,
    cutoffs: list[int],
    div_value: float,
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
    if output not in OUTPUTS:
        raise UserError(f"unknown model.output {output!r}; use one of: {', '.join(OUTPUTS)}.")
    if output == "adaptive":
        check_cutoffs(cutoffs, vocab_size)
        if hidden_size // div_value ** len(cutoffs) < 1:
            raise UserError(
                f"model.div_value={div_value} leaves the last of {len(cutoffs)} clusters a "
                f"projection of hidden_size / div_value^{len(cutoffs)} < 1 unit; lower "
                "div_value or use fewer cutoffs."
            )
        if tie_weights:
            raise UserError(
                "model.tie_weights needs model.output=softmax (the adaptive softmax has no "
                "single decoder matrix to share); drop one of the two."
            )
    if tie_weights and embedding_dim != hidden_size:
        raise UserError(
            f"model.tie_weights needs embedding_dim == hidden_size, got {embedding_dim} and "
            f"{hidden_size}; drop embedding_dim or set it to hidden_size."
        )


def check_cutoffs(cutoffs: list[int], vocab_size: int) -> None:
    """Adaptive-softmax cluster boundaries must rise strictly within ``[1, vocab_size - 1]``."""
    rising = all(a < b for a, b in zip(cutoffs, cutoffs[1:], strict=False))
    if not cutoffs or not rising or cutoffs[0] < 1 or cutoffs[-1] > vocab_size - 1:
        raise UserError(
            f"model.cutoffs must be increasing integers between 1 and {vocab_size - 1} "
            f"(the vocabulary has {vocab_size} types), got {cutoffs}; use null for the default."
        )
