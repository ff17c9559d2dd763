import dataclasses
import math

import pytest
import torch

from rnnlab.data.vocab import Vocab
from rnnlab.errors import UserError
from rnnlab.nn.cores import detached
from rnnlab.nn.gru import CustomGRU
from rnnlab.nn.lm import ADAPTIVE_FROM, RNNLM, ModelConfig, default_cutoffs
from rnnlab.nn.lstm import CustomLSTM
from rnnlab.nn.rnn import CustomRNN


@pytest.mark.parametrize("backend", ["builtin", "custom"])
def test_apple_to_pple(backend: str):
    """The seeds' classic: after reading "apple" the model predicts "pple!" exactly."""
    torch.manual_seed(0)
    vocab = Vocab.build("apple!", "char")
    inputs = torch.tensor(vocab.encode("apple")).unsqueeze(0)
    targets = torch.tensor(vocab.encode("pple!")).unsqueeze(0)
    model = RNNLM(len(vocab), ModelConfig(hidden_size=16, backend=backend))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    predictions = []
    for _ in range(200):
        logits, _ = model(inputs)
        predictions.append(vocab.decode(logits[0].argmax(-1)))
        if predictions[-1] == "pple!":
            break
        loss = torch.nn.functional.cross_entropy(logits[0], targets[0])
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_value_(model.parameters(), 5.0)  # the seeds' [-5, 5]
        optimizer.step()
    assert predictions[-1] == "pple!", f"after 200 steps it predicts {predictions[-1]!r}"
    assert predictions[0] != "pple!"  # it was learnt, not there from the start


@pytest.mark.parametrize("backend", ["builtin", "custom"])
def test_shapes_and_core(backend: str):
    model = RNNLM(11, ModelConfig(embedding_dim=6, hidden_size=8, num_layers=2, backend=backend))
    logits, hidden = model(torch.randint(0, 11, (3, 5)))
    assert logits.shape == (3, 5, 11) and hidden.shape == (2, 3, 8)
    core = torch.nn.RNN if backend == "builtin" else CustomRNN
    assert type(model.rnn) is core


def test_tied_weights_share_storage():
    model = RNNLM(11, ModelConfig(hidden_size=8, tie_weights=True))
    assert model.decoder.weight is model.embedding.weight


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"backend": "cudnn"}, "unknown model.backend 'cudnn'; use one of: builtin, custom"),
        ({"hidden_size": 0}, "model.hidden_size must be at least 1, got 0"),
        ({"num_layers": 0}, "model.num_layers must be at least 1, got 0"),
        ({"nonlinearity": "gelu"}, "unknown model.nonlinearity 'gelu'"),
        ({"dropout": 1.0}, r"model.dropout must be in \[0, 1\)"),
        (
            {"embedding_dim": 4, "tie_weights": True},
            "tie_weights needs embedding_dim == hidden_size",
        ),
    ],
)
def test_impossible_settings(kwargs: dict, message: str):
    with pytest.raises(UserError, match=message):
        RNNLM(11, ModelConfig(**kwargs))


@pytest.mark.parametrize("tie_weights", [False, True])
def test_initial_loss_is_near_uniform(tie_weights: bool):
    """A fresh model knows nothing: its loss starts within 0.05 nats of ln(V)."""
    torch.manual_seed(0)
    vocab_size = 1000
    model = RNNLM(vocab_size, ModelConfig(hidden_size=256, tie_weights=tie_weights))
    tokens = torch.randint(0, vocab_size, (8, 32))
    logits, _ = model(tokens)
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, vocab_size), tokens.reshape(-1))
    assert abs(loss.item() - math.log(vocab_size)) < 0.05


@pytest.mark.parametrize(
    ("vocab_size", "cutoffs"),
    [(33_278, [2000, 10000]), (10_000, [2000]), (2_001, [2000]), (65, [32]), (2, [1])],
)
def test_default_cutoffs(vocab_size: int, cutoffs: list[int]):
    assert default_cutoffs(vocab_size) == cutoffs


def adaptive_model(backend: str = "builtin") -> RNNLM:
    torch.manual_seed(0)
    config = ModelConfig(
        hidden_size=32, num_layers=2, backend=backend, output="adaptive", cutoffs=(5, 20)
    )
    return RNNLM(50, config).double()


@pytest.mark.parametrize("backend", ["builtin", "custom"])
def test_adaptive_log_probs_are_a_distribution_and_the_loss_reads_them(backend: str):
    """Exact for the adaptive model: every position's probabilities over all 50 ids sum to 1,
    and the training loss is the mean of -log p(target) under that same distribution."""
    model = adaptive_model(backend)
    tokens, targets = torch.randint(0, 50, (3, 7)), torch.randint(0, 50, (3, 7))
    log_probs, hidden = model(tokens)
    assert log_probs.shape == (3, 7, 50) and hidden.shape == (2, 3, 32)
    sums = log_probs.exp().sum(-1)
    assert torch.allclose(sums, torch.ones_like(sums), atol=1e-12)
    loss, loss_hidden = model.loss(tokens, targets)
    by_hand = -log_probs.gather(-1, targets.unsqueeze(-1)).mean()
    assert abs(loss.item() - by_hand.item()) < 1e-12
    assert torch.equal(loss_hidden, hidden)
    # and its gradient is the gradient of that quantity
    grads = torch.autograd.grad(loss, list(model.parameters()))
    expected = torch.autograd.grad(by_hand, list(model.parameters()))
    for got, want in zip(grads, expected, strict=True):
        assert torch.allclose(got, want, atol=1e-12)


def test_full_softmax_loss_is_cross_entropy_of_the_logits():
    torch.manual_seed(0)
    model = RNNLM(30, ModelConfig(hidden_size=8)).double()
    tokens, targets = torch.randint(0, 30, (2, 5)), torch.randint(0, 30, (2, 5))
    logits, _ = model(tokens)
    expected = torch.nn.functional.cross_entropy(logits.reshape(-1, 30), targets.reshape(-1))
    assert abs(model.loss(tokens, targets)[0].item() - expected.item()) < 1e-12


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"output": "hierarchical"}, "unknown model.output 'hierarchical'"),
        ({"cutoffs": [5, 3]}, r"model.cutoffs must be increasing integers between 1 and 10 "),
        ({"cutoffs": [0, 3]}, r"between 1 and 10 \(the vocabulary has 11 types\), got \[0, 3\]"),
        ({"cutoffs": [3, 11]}, "model.cutoffs must be increasing"),
        ({"cutoffs": []}, "model.cutoffs must be increasing"),
        ({"tie_weights": True, "embedding_dim": 4}, "tie_weights needs embedding_dim == hidden"),
        ({"div_value": 16.0, "cutoffs": [3, 6]}, r"model.div_value=16.0 leaves the last of 2"),
    ],
)
def test_impossible_adaptive_settings(kwargs: dict, message: str):
    settings = {"output": "adaptive", **kwargs}
    with pytest.raises(UserError, match=message):
        RNNLM(11, ModelConfig(hidden_size=8, **settings))


@pytest.mark.parametrize("backend", ["builtin", "custom"])
def test_tied_adaptive_input_is_each_words_output_vector(backend: str):
    """A head word's vector is its head row; a cluster word's is its row of the cluster's
    output matrix through the cluster's projection: W_out[w] @ W_proj, the vector whose dot
    product with the features is the word's logit within its cluster."""
    torch.manual_seed(0)
    config = ModelConfig(
        backend=backend,
        hidden_size=32,
        output="adaptive",
        cutoffs=(5, 12, 30),
        div_value=2.0,
        tie_weights=True,
    )
    net = RNNLM(47, config).double()
    softmax = net.decoder
    expected = torch.cat(
        [softmax.head.weight[:5]] + [out.weight @ proj.weight for proj, out in softmax.tail]
    )
    ids = torch.tensor([[0, 4, 5, 11, 12, 29, 30, 46], [46, 30, 29, 12, 11, 5, 4, 0]])
    # a row looked up then projected, against all rows projected then indexed: the same sums,
    # which BLAS may order differently by shape (equal on one CPU, 1 ulp apart on another)
    torch.testing.assert_close(net.embed(ids), expected[ids], rtol=0, atol=1e-12)
    assert net.embedding is None
    untied = RNNLM(47, dataclasses.replace(config, tie_weights=False))
    saved = sum(p.numel() for p in untied.parameters()) - sum(p.numel() for p in net.parameters())
    assert saved == 47 * 32  # the embedding matrix, and nothing else
    feats = torch.randn(3, 32, dtype=torch.float64)
    cluster_logits = feats @ expected[12:30].t()  # the second cluster's words, by their vectors
    torch.testing.assert_close(cluster_logits, softmax.tail[1](feats), rtol=0, atol=1e-12)
    loss, _ = net.loss(ids, ids.roll(1, dims=1))
    loss.backward()
    assert all(p.grad is not None for p in net.parameters())


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"hidden_size": "abc"}, "model.hidden_size must be a whole number, got 'abc'"),
        ({"num_layers": 1.5}, "model.num_layers must be a whole number, got 1.5"),
        ({"dropout": "x"}, "model.dropout must be a number, got 'x'"),
        ({"tie_weights": "yes"}, "model.tie_weights must be true or false, got 'yes'"),
        ({"locked_dropout": 1}, "model.locked_dropout must be true or false, got 1"),
        ({"sparse_embedding": "on"}, "model.sparse_embedding must be true or false, got 'on'"),
        (
            {"sparse_embedding": True, "tie_weights": True},
            "model.sparse_embedding needs an input table of its own, but tie_weights shares it",
        ),
        ({"bptt": "numpy"}, "unknown model.bptt 'numpy'; use one of: manual, autograd"),
        ({"div_value": 0}, "model.div_value must be above 0, got 0"),
        ({"cell": "transformer"}, "unknown model.cell 'transformer'; use one of: rnn, gru, lstm"),
    ],
)
def test_each_setting_is_checked_once_in_the_dataclass(settings: dict, message: str):
    with pytest.raises(UserError, match=message):
        ModelConfig(**settings)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {"cell": "lstm", "nonlinearity": "relu"},
            "model.nonlinearity=relu has no effect here: it applies only with model.cell=rnn",
        ),
        (
            {"backend": "builtin", "bptt": "autograd"},
            "model.bptt=autograd has no effect here: it applies only with model.backend=custom",
        ),
        ({"cutoffs": [5]}, r"model.cutoffs=\(5,\) has no effect here: .* model.output=adaptive"),
        ({"div_value": 2.0}, "model.div_value=2.0 has no effect here"),
        ({"recurrent_init_scale": 0.5}, "applies only with model.recurrent_init=orthogonal"),
        ({"locked_dropout": True}, "model.locked_dropout=true has no effect here"),
    ],
)
def test_a_setting_that_does_not_apply_to_the_chosen_model_is_refused(settings: dict, message):
    with pytest.raises(UserError, match=message):
        ModelConfig(**settings)


def test_the_settings_that_apply_are_taken():
    """The same values where they apply: the refusals above are about the combination."""
    ModelConfig(cell="rnn", nonlinearity="relu")
    ModelConfig(backend="custom", bptt="autograd")
    ModelConfig(output="adaptive", cutoffs=[5], div_value=2.0)
    ModelConfig(recurrent_init="orthogonal", recurrent_init_scale=0.5)
    ModelConfig(dropout=0.1, locked_dropout=True)


def test_the_dataclass_takes_its_fields_from_a_config_node_and_resolves_for_a_vocabulary():
    node = {"hidden_size": 8, "output": "adaptive", "optimizer": {"lr": 1.0}, "_target_": "x"}
    config = ModelConfig.from_settings(node)
    assert config == ModelConfig(hidden_size=8, output="adaptive")
    resolved = config.for_vocab(100)
    assert (resolved.embedding_dim, resolved.cutoffs) == (8, (50,))
    assert RNNLM(100, config).config == resolved


def test_dropout_of_one_is_the_language_models_limit_not_the_cells():
    """CustomRNN takes what nn.RNN takes (a dropout in [0, 1]); the language model, whose
    dropout also acts on the embedding and the output, refuses 1, which would zero them."""
    CustomRNN(4, 4, num_layers=2, dropout=1.0)
    torch.nn.RNN(4, 4, num_layers=2, dropout=1.0)
    with pytest.raises(UserError, match=r"model.dropout must be in \[0, 1\)"):
        ModelConfig(dropout=1.0)


@pytest.mark.parametrize("locked", [False, True])
def test_locked_dropout_keeps_one_mask_for_every_step(locked: bool):
    """Variational dropout: the same units dropped at every step of a sequence, scaled by
    1 / (1 - p); a fresh mask per element otherwise. Evaluation drops nothing."""
    net = RNNLM(10, ModelConfig(hidden_size=64, dropout=0.5, locked_dropout=locked))
    x = torch.ones(50, 8, 64)  # (T, B, F)
    torch.manual_seed(0)
    dropped = net.drop(x)
    assert set(dropped.unique().tolist()) == {0.0, 2.0}
    assert 0.4 < float((dropped == 0).double().mean()) < 0.6
    same_every_step = bool((dropped == dropped[:1]).all())
    assert same_every_step == locked
    assert torch.equal(net.eval().drop(x), x)


@pytest.mark.parametrize(
    ("cell", "backend", "core"),
    [
        ("rnn", "builtin", torch.nn.RNN),
        ("gru", "builtin", torch.nn.GRU),
        ("lstm", "builtin", torch.nn.LSTM),
        ("rnn", "custom", CustomRNN),
        ("gru", "custom", CustomGRU),
        ("lstm", "custom", CustomLSTM),
    ],
)
def test_the_core_is_the_cell_of_the_backend(cell: str, backend: str, core: type):
    """model.cell and model.backend pick the core independently; the state is the cell's."""
    config = ModelConfig(cell=cell, backend=backend, hidden_size=8, num_layers=2, dropout=0.1)
    model = RNNLM(11, config)
    assert type(model.rnn) is core
    logits, state = model(torch.randint(0, 11, (3, 5)))
    assert logits.shape == (3, 5, 11)
    states = state if cell == "lstm" else (state,)
    assert [s.shape for s in states] == [(2, 3, 8)] * len(states)
    assert all(
        not s.requires_grad for s in (detached(state) if cell == "lstm" else (detached(state),))
    )


@pytest.mark.parametrize(
    ("vocab_size", "output"),
    [(100, "softmax"), (ADAPTIVE_FROM - 1, "softmax"), (ADAPTIVE_FROM, "adaptive")],
)
def test_output_auto_is_the_full_softmax_below_the_threshold_and_adaptive_from_it(
    vocab_size: int, output: str
):
    """The choice is made once, against the vocabulary, and the model is built as it says."""
    config = ModelConfig(output="auto", tie_weights=True, hidden_size=8, div_value=2.0)
    resolved = config.for_vocab(vocab_size)
    assert resolved.output == output
    assert resolved.cutoffs == (None if output == "softmax" else tuple(default_cutoffs(vocab_size)))
    assert resolved.div_value == (4.0 if output == "softmax" else 2.0)
    if vocab_size < 1000:
        net = RNNLM(vocab_size, config)
        assert net.config == resolved and isinstance(net.decoder, torch.nn.Linear)
        assert net.decoder.weight is net.embedding.weight  # tied, as asked
