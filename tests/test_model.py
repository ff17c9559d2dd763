import math

import pytest
import torch

from rnnlab.data.vocab import Vocab
from rnnlab.errors import UserError
from rnnlab.model import RNNLM
from rnnlab.rnn import CustomRNN


@pytest.mark.parametrize("backend", ["builtin", "custom"])
def test_apple_to_pple(backend: str):
    """The seeds' classic: after reading "apple" the model predicts "pple!" exactly."""
    torch.manual_seed(0)
    vocab = Vocab.build("apple!", "char")
    inputs = torch.tensor(vocab.encode("apple")).unsqueeze(0)
    targets = torch.tensor(vocab.encode("pple!")).unsqueeze(0)
    model = RNNLM(len(vocab), hidden_size=16, backend=backend)
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
    model = RNNLM(11, embedding_dim=6, hidden_size=8, num_layers=2, backend=backend)
    logits, hidden = model(torch.randint(0, 11, (3, 5)))
    assert logits.shape == (3, 5, 11) and hidden.shape == (2, 3, 8)
    core = torch.nn.RNN if backend == "builtin" else CustomRNN
    assert type(model.rnn) is core


def test_tied_weights_share_storage():
    model = RNNLM(11, hidden_size=8, tie_weights=True)
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
        RNNLM(11, **kwargs)


@pytest.mark.parametrize("tie_weights", [False, True])
def test_initial_loss_is_near_uniform(tie_weights: bool):
    """A fresh model knows nothing: its loss starts within 0.05 nats of ln(V)."""
    torch.manual_seed(0)
    vocab_size = 1000
    model = RNNLM(vocab_size, hidden_size=256, tie_weights=tie_weights)
    tokens = torch.randint(0, vocab_size, (8, 32))
    logits, _ = model(tokens)
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, vocab_size), tokens.reshape(-1))
    assert abs(loss.item() - math.log(vocab_size)) < 0.05
