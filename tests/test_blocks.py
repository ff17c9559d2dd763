"""model.arch=blocks: pre-norm residual blocks around any cell, their carried state, and the
settings that belong to them."""

import pytest
import torch

from rnnlab.errors import UserError
from rnnlab.nn.cores import detached
from rnnlab.nn.dynamics import trace
from rnnlab.nn.lm import RNNLM, ModelConfig
from tests.conftest import CELL_BACKENDS

VOCAB = 17


def blocks_model(cell: str, backend: str, **settings) -> RNNLM:
    torch.manual_seed(0)
    config = ModelConfig(
        cell=cell, backend=backend, arch="blocks", num_layers=2, hidden_size=8, **settings
    )
    return RNNLM(VOCAB, config)


def leaves(state) -> list:
    """The tensors of a nested state, in order."""
    return [state] if isinstance(state, torch.Tensor) else [t for s in state for t in leaves(s)]


@pytest.mark.parametrize(("cell", "backend"), CELL_BACKENDS)
@pytest.mark.parametrize("conv_kernel", [0, 4])
def test_a_window_of_2t_is_two_chained_windows_of_t(cell: str, backend: str, conv_kernel: int):
    """The state each block carries (its mixer's, and the convolution's last k - 1 inputs)
    continues a window exactly where the last one ended."""
    net = blocks_model(cell, backend, conv_kernel=conv_kernel, mlp_ratio=2).double().eval()
    tokens = torch.randint(VOCAB, (3, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        whole, final = net(tokens)
        first, state = net(tokens[:, :12])
        second, chained = net(tokens[:, 12:], detached(state))
    assert float((torch.cat([first, second], 1) - whole).abs().max()) <= 1e-12
    flat, expected = leaves(chained), leaves(final)
    assert flat and all(isinstance(t, torch.Tensor) for t in flat)
    assert max(float((a - b).abs().max()) for a, b in zip(flat, expected, strict=True)) <= 1e-12
    if conv_kernel:  # the convolution's memory is part of the state: without it, a different window
        blank = tuple((s[0], torch.zeros_like(s[1])) for s in state)
        with torch.no_grad():
            forgot, _ = net(tokens[:, 12:], blank)
        assert float((forgot - second).abs().max()) > 1e-6


def test_the_block_is_the_equations():
    """x + mixer(LN(x)), then x + MLP(LN(x)), then a final LayerNorm: written out here."""
    net = blocks_model("rnn", "builtin", mlp_ratio=3).double().eval()
    tokens = torch.randint(VOCAB, (2, 5), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        x = net.embed(tokens.t())
        for block in net.rnn.blocks:
            x = x + block.mixer(block.norm_mixer(x))[0]
            x = x + block.mlp(block.norm_mlp(x))
        feats, _ = net.features(tokens)
        expected = net.rnn.norm(x).transpose(0, 1)
    assert float((feats - expected).abs().max()) <= 1e-12
    assert net.rnn.blocks[0].mlp[0].out_features == 3 * 8


@pytest.mark.parametrize("cell", ["mingru", "minlstm"])
def test_fifty_training_steps_are_the_same_under_either_scan(cell: str):
    """Float32, Adam, dropout off: the two scans give the same losses step after step."""
    data = torch.randint(VOCAB, (4, 33), generator=torch.Generator().manual_seed(3))
    curves = []
    for scan in ("sequential", "parallel"):
        net = blocks_model(cell, "custom", scan=scan, conv_kernel=3)
        optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
        losses, state = [], None
        for _ in range(50):
            loss, state = net.loss(data[:, :-1], data[:, 1:], state)
            state = detached(state)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(float(loss))
        curves.append(losses)
    assert curves[0][-1] < curves[0][0] - 0.5  # it learns
    assert curves[1] == pytest.approx(curves[0], rel=1e-4)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"arch": "blocks", "conv_kernel": -1}, "model.conv_kernel must be at least 0, got -1"),
        ({"arch": "blocks", "mlp_ratio": -2}, "model.mlp_ratio must be at least 0, got -2"),
        ({"arch": "tower"}, "unknown model.arch 'tower'; use one of: stack, blocks"),
        (
            {"conv_kernel": 4},
            "model.conv_kernel=4 has no effect here: it applies only with model.arch=blocks",
        ),
        ({"arch": "blocks", "embedding_dim": 16}, "embedding_dim must be hidden_size"),
    ],
)
def test_a_bad_blocks_setting_is_one_sentence(settings: dict, message: str):
    with pytest.raises(UserError, match=message):
        ModelConfig(**settings)


@pytest.mark.parametrize(("cell", "backend"), CELL_BACKENDS)
@pytest.mark.parametrize("conv_kernel", [0, 3])
def test_the_probes_unroll_blocks_to_the_models_own_numbers(
    cell: str, backend: str, conv_kernel: int
):
    """The trace runs each block's mixer step by step and the rest of the block around it:
    its log-probabilities are the model's, and it leaves the model in training mode."""
    net = blocks_model(cell, backend, conv_kernel=conv_kernel, dropout=0.3).double()
    tokens = torch.randint(VOCAB, (2, 9), generator=torch.Generator().manual_seed(4))
    tr = trace(net, tokens)
    assert net.training
    net.eval()
    with torch.no_grad():
        logits, _ = net(tokens)
    expected = torch.log_softmax(logits, -1)
    assert float((tr.log_probs.detach() - expected).abs().max()) <= 1e-12
    assert len(tr.states) == 2 and len(tr.states[0]) == 9 + 1
