"""RNNLM: embedding -> recurrent core -> dropout -> output layer, and its settings.

The recurrent core is an Elman RNN, a GRU or an LSTM (``cell="rnn" | "gru" | "lstm"``),
PyTorch's (``backend="builtin"``: ``torch.nn.RNN``, ``GRU``, ``LSTM``) or rnnlab's
hand-written one (``backend="custom"``: :class:`~rnnlab.nn.rnn.CustomRNN`,
:class:`~rnnlab.nn.gru.CustomGRU`, :class:`~rnnlab.nn.lstm.CustomLSTM`). Each pair takes
the same arguments and holds the same parameters, and the state carried from one window
to the next is whatever the core returns (a pair for the LSTM, see :func:`detached`), so
nothing else depends on which one runs. The model knows sizes, not data: the vocabulary
size comes in as a number.

The output layer is a full softmax (``output="softmax"``, a linear decoder) or an
adaptive softmax (``output="adaptive"``, :class:`torch.nn.AdaptiveLogSoftmaxWithLoss`,
Grave et al. 2017): a head over the most frequent types plus clusters of rarer ones,
entered through small projections. Its probabilities are a proper distribution over
the whole vocabulary, so loss, perplexity and sampling are exact for that model;
training only pays for the cluster each target falls in. It needs ids ordered by
frequency, which :meth:`rnnlab.data.vocab.Vocab.build` guarantees.

Every setting lives in :class:`ModelConfig`, with its default and its check: the
configs (``model.*``), the LightningModule and the run records all take them from there.

Shapes: tokens ``(B, T)`` -> logits ``(B, T, V)`` (log-probabilities for the adaptive
output); the state ``(L, B, H)``, or two of them for the LSTM. The core runs time-major,
the layout both backends are fastest in.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from itertools import pairwise
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from rnnlab.errors import UserError, check_bool, check_choice, check_int, check_number
from rnnlab.nn import BACKENDS
from rnnlab.nn.attention import SelfAttention, default_heads
from rnnlab.nn.blocks import Blocks
from rnnlab.nn.cores import CORES, LINEAR, NONLINEARITIES, State
from rnnlab.nn.init import RECURRENT_INITS, init_recurrent
from rnnlab.nn.scan import SCANS
from rnnlab.nn.stack import BPTT_MODES

OUTPUTS = ("softmax", "adaptive", "auto")
#: what can mix a block's steps: the recurrent cells, and causal self-attention (blocks only)
ATTENTION = "attention"
MIXERS = (*CORES, ATTENTION)
#: how the cells are arranged: stacked directly, or as mixers of residual blocks
ARCHS = ("stack", "blocks")
#: output=auto: the full softmax below this many types, the adaptive softmax from it on (a
#: tied full softmax won at 10k types, the adaptive softmax at 33k: docs/results.md)
ADAPTIVE_FROM = 20_000
#: the head holds the 2,000 most frequent types; each further cluster is five times larger
CUTOFF_STEPS = (2_000, 10_000, 50_000, 250_000)


def default_cutoffs(vocab_size: int) -> list[int]:
    """Cluster boundaries for an adaptive softmax over ``vocab_size`` frequency-sorted ids.

    WikiText-2 (33,278 types) gets ``[2000, 10000]``: the head alone covers 77% of its
    training tokens, head and first cluster 93%. A vocabulary under 2,000 types is cut in half.
    """
    return [c for c in CUTOFF_STEPS if c < vocab_size] or [max(1, vocab_size // 2)]


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The language model's settings (``model.<field>`` on the command line).

    Each is checked here once, with one sentence naming it; what depends on the
    vocabulary (the cutoffs) is checked by :meth:`for_vocab`.
    """

    #: rnn (Elman) | gru | lstm | mingru | minlstm (linear in the state; custom backend only) |
    #: attention (causal self-attention, arch=blocks only: see rnnlab.nn.attention)
    cell: str = "rnn"
    #: builtin (torch.nn's) | custom (rnnlab.nn's, hand-written BPTT)
    backend: str = "builtin"
    #: custom backend only: manual (hand-written BPTT) | autograd (the same cell under autograd)
    bptt: str = "manual"
    #: mingru and minlstm only: sequential (one step after another: the fast one on a CPU) |
    #: parallel (every step at once, recursive doubling: for a GPU); the same numbers
    scan: str = "sequential"
    #: None (null): the same as hidden_size
    embedding_dim: int | None = None
    #: units of each recurrent layer (H)
    hidden_size: int = 256
    #: recurrent layers stacked, each reading the one below (arch=blocks: the blocks)
    num_layers: int = 1
    #: stack (the cells stacked directly) | blocks (pre-norm residual blocks, each a one-layer
    #: cell as its mixer and an MLP: see rnnlab.nn.blocks)
    arch: str = "stack"
    #: blocks only: the MLP's hidden width as a multiple of hidden_size (0: no MLP)
    mlp_ratio: int = 4
    #: blocks only: a causal depthwise convolution of this many steps before the mixer (0: none)
    conv_kernel: int = 0
    #: attention only: its heads (None, null: heads of 64 units where hidden_size allows)
    num_heads: int | None = None
    #: attention only: the most tokens sampling attends over, restarting from the latest half
    #: when full (None, null: the training window, data.seq_len)
    window: int | None = None
    #: rnn only: tanh | relu
    nonlinearity: str = "tanh"
    #: pytorch (the cores' own) | orthogonal | identity (the IRNN with relu): see rnnlab.nn.init
    recurrent_init: str = "pytorch"
    #: orthogonal and identity only: every singular value of each W_hh block
    recurrent_init_scale: float = 1.0
    #: on the embedding and the core's output, and between layers
    dropout: float = 0.0
    #: one dropout mask per sequence for every step of a window, on the embedding and the
    #: core's output (variational dropout, Gal and Ghahramani 2016); false: a fresh mask per step
    locked_dropout: bool = False
    #: the input embeddings are the output layer's (needs embedding_dim == hidden_size): the
    #: decoder's matrix, or for the adaptive softmax its head and cluster weights (see embed)
    tie_weights: bool = False
    #: the input table's gradient holds only the rows a batch looked up (a sparse tensor),
    #: so the dense V x E gradient, its norm and its update are not paid every step; for
    #: optimizers that take sparse gradients (SGD, Adagrad), with an untied table
    sparse_embedding: bool = False
    #: softmax (one linear decoder) | adaptive (exact, far cheaper for large word vocabularies)
    #: | auto (softmax below ADAPTIVE_FROM types, adaptive from it on)
    output: str = "softmax"
    #: adaptive only: cluster boundaries in frequency-sorted ids (None, null: default_cutoffs)
    cutoffs: tuple[int, ...] | None = None
    #: adaptive only: cluster i is entered through a hidden_size / div_value^(i+1) projection
    div_value: float = 4.0

    def __post_init__(self) -> None:
        check_choice("model.cell", self.cell, MIXERS)
        check_choice("model.backend", self.backend, BACKENDS)
        check_choice("model.bptt", self.bptt, BPTT_MODES)
        check_choice("model.scan", self.scan, SCANS)
        check_choice("model.nonlinearity", self.nonlinearity, NONLINEARITIES)
        check_choice("model.output", self.output, OUTPUTS)
        check_choice("model.recurrent_init", self.recurrent_init, RECURRENT_INITS)
        check_number("model.recurrent_init_scale", self.recurrent_init_scale, 0, open_low=True)
        check_int("model.hidden_size", self.hidden_size, 1)
        check_int("model.num_layers", self.num_layers, 1)
        check_choice("model.arch", self.arch, ARCHS)
        check_int("model.mlp_ratio", self.mlp_ratio, 0)
        check_int("model.conv_kernel", self.conv_kernel, 0)
        for name in ("embedding_dim", "num_heads", "window"):
            if getattr(self, name) is not None:
                check_int(f"model.{name}", getattr(self, name), 1)
        check_number("model.dropout", self.dropout, 0, 1, open_high=True)
        check_number("model.div_value", self.div_value, 0, open_low=True)
        for name in ("tie_weights", "locked_dropout", "sparse_embedding"):
            check_bool(f"model.{name}", getattr(self, name))
        if self.cutoffs is not None:
            object.__setattr__(self, "cutoffs", tuple(self.cutoffs))  # a list from the configs
        if self.tie_weights and self.embedding_size != self.hidden_size:
            raise UserError(
                f"model.tie_weights needs embedding_dim == hidden_size, got {self.embedding_dim} "
                f"and {self.hidden_size}; drop embedding_dim or set it to hidden_size."
            )
        if self.sparse_embedding and self.tie_weights:
            raise UserError(
                "model.sparse_embedding needs an input table of its own, but tie_weights shares "
                "it with the output layer, whose gradient is dense; set one of them to false."
            )
        self._refuse_what_does_not_apply()
        if self.arch == "blocks" and self.embedding_size != self.hidden_size:
            raise UserError(
                f"model.arch=blocks adds every block's output to its input, so embedding_dim "
                f"must be hidden_size, got {self.embedding_dim} and {self.hidden_size}; drop "
                "embedding_dim."
            )
        if self.cell == ATTENTION:
            self._check_attention()
        if self.cell in LINEAR and self.backend == "builtin":
            raise UserError(
                f"model.cell={self.cell} has no torch.nn layer to run it; use "
                "model.backend=custom (rnnlab's, with its hand-written BPTT)."
            )
        if (self.cell in LINEAR or self.cell == ATTENTION) and self.recurrent_init != "pytorch":
            raise UserError(
                f"model.recurrent_init={self.recurrent_init} shapes W_hh, which "
                f"model.cell={self.cell} does not have (nothing in it reads the last state "
                "through a matrix); drop it."
            )

    def _refuse_what_does_not_apply(self) -> None:
        """A setting changed from its default where it has no effect is a mistake, not a no-op:
        ``model.cell=lstm model.nonlinearity=relu`` would otherwise train a plain LSTM."""
        applies = {
            "nonlinearity": (self.cell == "rnn", "model.cell=rnn"),
            "bptt": (
                self.backend == "custom" and self.cell != ATTENTION,
                "model.backend=custom and a recurrent cell",
            ),
            "scan": (self.cell in LINEAR, "model.cell=mingru or minlstm"),
            "cutoffs": (self.output != "softmax", "model.output=adaptive or auto"),
            "div_value": (self.output != "softmax", "model.output=adaptive or auto"),
            "recurrent_init_scale": (
                self.recurrent_init != "pytorch",
                "model.recurrent_init=orthogonal or identity",
            ),
            "locked_dropout": (self.dropout > 0, "model.dropout above 0"),
            "mlp_ratio": (self.arch == "blocks", "model.arch=blocks"),
            "conv_kernel": (self.arch == "blocks", "model.arch=blocks"),
            "num_heads": (self.cell == ATTENTION, "model.cell=attention"),
            "window": (self.cell == ATTENTION, "model.cell=attention"),
        }
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        for name, (applied, needs) in applies.items():
            value = getattr(self, name)
            if not applied and value != defaults[name]:
                shown = str(value).lower() if isinstance(value, bool) else value
                raise UserError(
                    f"model.{name}={shown} has no effect here: it applies only with {needs}; "
                    f"drop it, or set {needs}."
                )

    def _check_attention(self) -> None:
        """Attention mixes the steps of a residual block, in heads of an even size."""
        if self.arch != "blocks":
            raise UserError(
                "model.cell=attention is a mixer of residual blocks, not a layer to stack; "
                "set model.arch=blocks."
            )
        heads = self.heads
        if self.hidden_size % heads or (self.hidden_size // heads) % 2:
            raise UserError(
                f"model.hidden_size={self.hidden_size} does not split into {heads} attention "
                "heads of an even size (the rotary positions turn channels in pairs); choose "
                "num_heads or hidden_size so that it does."
            )

    @property
    def heads(self) -> int:
        """Attention's heads: ``num_heads``, or the default for the width."""
        return self.num_heads or default_heads(self.hidden_size)

    def for_window(self, seq_len: int) -> ModelConfig:
        """Attention's sampling window, if left to default: the training window ``seq_len``."""
        if self.cell != ATTENTION or self.window is not None:
            return self
        return dataclasses.replace(self, window=seq_len)

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> ModelConfig:
        """The fields found in ``settings`` (a ``model`` config node holds others too)."""
        return cls(
            **{f.name: settings[f.name] for f in dataclasses.fields(cls) if f.name in settings}
        )

    @property
    def embedding_size(self) -> int:
        return self.hidden_size if self.embedding_dim is None else self.embedding_dim

    def for_vocab(self, vocab_size: int) -> ModelConfig:
        """These settings with nothing left to default, checked against ``vocab_size``:
        ``output=auto`` becomes ``softmax`` or ``adaptive`` here, so the model, its
        checkpoint and its run record name the output layer that was built."""
        check_int("the vocabulary size", vocab_size, 1)
        output = self.output
        if output == "auto":
            output = "adaptive" if vocab_size >= ADAPTIVE_FROM else "softmax"
        if output == "softmax":
            defaults = {"cutoffs": None, "div_value": ModelConfig.div_value}  # unused: auto
            return dataclasses.replace(
                self, output=output, embedding_dim=self.embedding_size, **defaults
            )
        cutoffs = default_cutoffs(vocab_size) if self.cutoffs is None else list(self.cutoffs)
        rising = all(a < b for a, b in zip(cutoffs, cutoffs[1:], strict=False))
        if not cutoffs or not rising or cutoffs[0] < 1 or cutoffs[-1] > vocab_size - 1:
            raise UserError(
                f"model.cutoffs must be increasing integers between 1 and {vocab_size - 1} "
                f"(the vocabulary has {vocab_size} types), got {cutoffs}; use null for the default."
            )
        if self.hidden_size // self.div_value ** len(cutoffs) < 1:
            raise UserError(
                f"model.div_value={self.div_value} leaves the last of {len(cutoffs)} clusters a "
                f"projection of hidden_size / div_value^{len(cutoffs)} < 1 unit; lower "
                "div_value or use fewer cutoffs."
            )
        return dataclasses.replace(
            self, output=output, embedding_dim=self.embedding_size, cutoffs=tuple(cutoffs)
        )

    def recurrent_core(self) -> nn.Module:
        """The core ``arch`` says: ``num_layers`` stacked layers of the cell (dropout between
        them), or ``num_layers`` residual blocks each with a one-layer cell as its mixer."""
        if self.arch == "blocks":
            width = self.hidden_size
            return Blocks(
                lambda: self.cell_layers(width, 1), width, self.num_layers, self.mlp_ratio,
                self.conv_kernel, self.dropout,
            )  # fmt: skip
        return self.cell_layers(self.embedding_size, self.num_layers)

    def cell_layers(self, input_size: int, num_layers: int) -> nn.Module:
        """``num_layers`` layers of ``cell`` on ``backend``, ``W_hh`` as ``recurrent_init``
        says; dropout acts only between its layers (the cores warn otherwise). Attention is
        one layer, a block's mixer."""
        if self.cell == ATTENTION:
            return SelfAttention(self.hidden_size, self.heads, self.backend)
        options: dict[str, Any] = {"dropout": self.dropout if num_layers > 1 else 0.0}
        if self.cell == "rnn":
            options["nonlinearity"] = self.nonlinearity
        if self.cell in LINEAR:
            options["scan"] = self.scan
        if self.backend == "custom":
            options["bptt"] = self.bptt
        layers = CORES[self.cell][self.backend]
        core = layers(input_size, self.hidden_size, num_layers, **options)
        init_recurrent(core, self.recurrent_init, self.recurrent_init_scale)
        return core


class RNNLM(nn.Module):
    """A recurrent language model whose core is chosen by ``config.cell`` and ``config.backend``."""

    def __init__(self, vocab_size: int, config: ModelConfig | None = None) -> None:
        super().__init__()
        #: the settings in full, cutoffs and embedding size included
        self.config = (config or ModelConfig()).for_vocab(vocab_size)
        self.vocab_size = vocab_size
        self.adaptive = self.config.output == "adaptive"
        #: none where the adaptive softmax's own weights embed the input (tie_weights)
        self.embedding: nn.Embedding | None = None
        if not (self.adaptive and self.config.tie_weights):
            self.embedding = nn.Embedding(
                vocab_size, self.config.embedding_size, sparse=self.config.sparse_embedding
            )
        self.rnn = self.config.recurrent_core()
        self.dropout = nn.Dropout(self.config.dropout)
        hidden = self.config.hidden_size
        self.decoder: nn.Linear | nn.AdaptiveLogSoftmaxWithLoss
        if self.adaptive:
            cutoffs, div_value = list(self.config.cutoffs or ()), self.config.div_value
            self.decoder = nn.AdaptiveLogSoftmaxWithLoss(hidden, vocab_size, cutoffs, div_value)
        else:
            self.decoder = nn.Linear(hidden, vocab_size)
            if self.embedding is not None and self.config.tie_weights:
                self.decoder.weight = self.embedding.weight
        self.init_weights()

    @property
    def backend(self) -> str:
        return self.config.backend

    @property
    def window(self) -> int | None:
        """How many of the latest tokens a sampled token sees: attention's window; ``None``
        for a recurrent core, whose state carries everything before."""
        return self.config.window if self.config.cell == ATTENTION else None

    def recurrent_layers(self) -> list[tuple[nn.Module, int]]:
        """Each recurrent layer, bottom up, as the module holding its weights and its index
        there: the stacked core's layers, or each residual block's one-layer mixer. What code
        that reads the cells layer by layer (the probes) asks of the architecture."""
        if isinstance(self.rnn, Blocks):
            return [(block.mixer, 0) for block in self.rnn.blocks]
        return [(self.rnn, layer) for layer in range(self.config.num_layers)]

    def init_weights(self, scale: float = 0.1) -> None:
        """Embedding and decoder uniform in [-0.1, 0.1], decoder bias zero (as the PyTorch
        word_language_model example): nn.Embedding's N(0, 1) makes a tied decoder start with
        logits of size sqrt(H) and an initial loss far above ln(V). The core keeps nn.RNN's
        init, the adaptive softmax its own (and so does its tied input).
        """
        if self.embedding is not None:
            nn.init.uniform_(self.embedding.weight, -scale, scale)
        if not self.adaptive:
            nn.init.uniform_(self.decoder.weight, -scale, scale)
            nn.init.zeros_(self.decoder.bias)

    def features(
        self, tokens: torch.Tensor, hidden: State | None = None
    ) -> tuple[torch.Tensor, State]:
        """What the output layer reads: ``(B, T, H)`` after dropout, and the new state."""
        emb = self.drop(self.embed(tokens.t()))  # (T, B, E)
        output, hidden = self.rnn(emb, hidden)  # (T, B, H), (L, B, H) or a pair of them
        return self.drop(output).transpose(0, 1), hidden

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """Input vectors of ``tokens``: ``(...) -> (..., E)``.

        With the adaptive softmax and ``tie_weights``, a word's vector is its output vector,
        as adaptive input embeddings shared with the softmax (Baevski and Auli 2019): for the
        head's words their row of the head; for a word of cluster ``i`` its row of the
        cluster's ``(n_i, h_i)`` output matrix taken back to ``H`` through the cluster's
        ``(h_i, H)`` projection. Every id is looked up in every table (clamped) and the right
        one chosen by ``where``: no data-dependent shapes, so it exports.
        """
        if self.embedding is not None:
            return self.embedding(tokens)
        softmax = self.decoder
        shortlist = softmax.shortlist_size
        vectors = F.embedding(tokens.clamp(max=shortlist - 1), softmax.head.weight[:shortlist])
        clusters = pairwise(softmax.cutoffs)  # cutoffs end with the vocabulary size
        for (low, high), (project, output) in zip(clusters, softmax.tail, strict=True):
            local = (tokens - low).clamp(0, high - low - 1)
            cluster = F.embedding(local, output.weight) @ project.weight  # (..., H)
            inside = ((tokens >= low) & (tokens < high)).unsqueeze(-1)
            vectors = torch.where(inside, cluster, vectors)
        return vectors

    def drop(self, x: torch.Tensor) -> torch.Tensor:
        """Dropout on a time-major ``(T, B, F)``: a fresh mask per element, or with
        ``locked_dropout`` one ``(1, B, F)`` mask for every step."""
        p = self.config.dropout
        if not self.config.locked_dropout or not self.training or p == 0:
            return self.dropout(x)
        return x * x.new_empty(1, *x.shape[1:]).bernoulli_(1 - p).div_(1 - p)

    def forward(
        self, tokens: torch.Tensor, hidden: State | None = None
    ) -> tuple[torch.Tensor, State]:
        """Logits ``(B, T, V)`` over the whole vocabulary (for sampling and inspection)."""
        feats, hidden = self.features(tokens, hidden)
        return (self.log_probs(feats) if self.adaptive else self.decoder(feats)), hidden

    def log_probs(self, feats: torch.Tensor) -> torch.Tensor:
        """Log-probabilities of the next token over the whole vocabulary: ``(..., H) -> (..., V)``.

        For probes and inspection, which read probabilities, not logits.
        """
        if self.adaptive:
            flat = self.decoder.log_prob(feats.reshape(-1, feats.size(-1)))
            return flat.view(*feats.shape[:-1], -1)
        return F.log_softmax(self.decoder(feats), dim=-1)

    def loss(
        self, tokens: torch.Tensor, targets: torch.Tensor, hidden: State | None = None
    ) -> tuple[torch.Tensor, State]:
        """Mean NLL of ``targets`` over the batch, without the full ``(B, T, V)`` for adaptive."""
        feats, hidden = self.features(tokens, hidden)
        flat, flat_targets = feats.reshape(-1, feats.size(-1)), targets.reshape(-1)
        if self.adaptive:
            return self.decoder(flat, flat_targets).loss, hidden
        return F.cross_entropy(self.decoder(flat), flat_targets), hidden
