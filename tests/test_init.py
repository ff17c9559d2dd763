"""model.recurrent_init: the same W_hh on both backends, with the singular values promised."""

import pytest
import torch

from rnnlab.errors import UserError
from rnnlab.nn.cores import GATES
from rnnlab.nn.lm import RNNLM, ModelConfig
from tests.conftest import CLASSIC_CELLS

CELLS = CLASSIC_CELLS


def model(cell: str, backend: str, **settings) -> RNNLM:
    torch.manual_seed(0)
    config = ModelConfig(cell=cell, backend=backend, hidden_size=16, num_layers=2, **settings)
    return RNNLM(11, config)


@pytest.mark.parametrize("cell", CELLS)
def test_orthogonal_blocks_have_every_singular_value_the_scale(cell: str):
    net = model(cell, "custom", recurrent_init="orthogonal", recurrent_init_scale=0.9)
    for layer in range(2):
        weight = getattr(net.rnn, f"weight_hh_l{layer}").double()
        blocks = weight.split(16)
        assert len(blocks) == len(GATES[cell])
        for block in blocks:
            torch.testing.assert_close(
                torch.linalg.svdvals(block),
                torch.full((16,), 0.9, dtype=torch.float64),
                atol=1e-6,
                rtol=0,
            )


@pytest.mark.parametrize("cell", CELLS)
def test_identity_blocks_are_scaled_identities(cell: str):
    net = model(cell, "builtin", recurrent_init="identity", recurrent_init_scale=0.5)
    weight = net.rnn.weight_hh_l1
    assert torch.equal(weight, 0.5 * torch.eye(16).repeat(len(GATES[cell]), 1))
    biases_zero = torch.count_nonzero(net.rnn.bias_hh_l0) == 0
    assert biases_zero == (cell == "rnn")  # the IRNN's zero biases, an Elman core's only


@pytest.mark.parametrize("how", ["pytorch", "orthogonal", "identity"])
@pytest.mark.parametrize("cell", CELLS)
def test_both_backends_start_from_the_same_weights(cell: str, how: str):
    builtin, custom = (model(cell, b, recurrent_init=how) for b in ("builtin", "custom"))
    for (name, a), (_, b) in zip(
        builtin.named_parameters(), custom.named_parameters(), strict=True
    ):
        assert torch.equal(a, b), name


def test_the_default_leaves_pytorchs_init_alone():
    default, pytorch = model("rnn", "builtin"), model("rnn", "builtin", recurrent_init="pytorch")
    assert torch.equal(default.rnn.weight_hh_l0, pytorch.rnn.weight_hh_l0)
    bound = 1 / 16**0.5
    assert default.rnn.weight_hh_l0.abs().max() <= bound


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"recurrent_init": "xavier"}, "model.recurrent_init"),
        ({"recurrent_init_scale": 0}, "model.recurrent_init_scale"),
    ],
)
def test_a_bad_recurrent_init_is_one_sentence(settings: dict, named: str):
    with pytest.raises(UserError, match=named):
        ModelConfig(**settings)
