"""model.sparse_embedding: a sparse input-table gradient, clipped and applied as the dense one."""

from functools import partial
from pathlib import Path

import pytest
import torch
from torch import nn

from rnnlab.data.datamodule import LMDataModule
from rnnlab.nn.lm import ModelConfig
from rnnlab.training.module import RNNLMModule
from rnnlab.training.sparse_gradients import clip_gradients_
from tests.conftest import quiet_trainer


def twin_gradients() -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """The same float64 gradients twice, the table's sparse (uncoalesced: ids repeat) in one."""
    ids = torch.tensor([3, 1, 3, 7, 1, 3])
    twins = []
    for sparse in (True, False):
        table = nn.Embedding(10, 4, sparse=sparse).double()
        linear = nn.Linear(4, 2).double()
        table.weight.data.copy_(torch.arange(40.0).view(10, 4) / 40)
        linear.weight.data.fill_(0.5)
        linear.bias.data.fill_(-0.1)
        linear(table(ids)).pow(2).sum().backward()
        twins.append([table.weight, *linear.parameters()])
    assert twins[0][0].grad.is_sparse and not twins[0][0].grad.is_coalesced()
    return twins[0], twins[1]


@pytest.mark.parametrize(
    ("algorithm", "clip", "clips"),
    [("norm", 0.25, True), ("norm", 1e3, False), ("value", 0.3, True)],
)
def test_sparse_gradients_are_clipped_as_torch_clips_the_dense_ones(
    algorithm: str, clip: float, clips: bool
):
    sparse, dense = twin_gradients()
    before = [p.grad.to_dense().clone() for p in sparse]
    clip_gradients_(sparse, clip, algorithm)
    if algorithm == "norm":
        norm = torch.nn.utils.clip_grad_norm_(dense, clip)
        assert bool(norm > clip) == clips
    else:
        torch.nn.utils.clip_grad_value_(dense, clip)
    assert sparse[0].grad.is_sparse
    for s, d in zip(sparse, dense, strict=True):
        torch.testing.assert_close(s.grad.to_dense(), d.grad, rtol=0, atol=1e-12)
    after = [p.grad.to_dense() for p in sparse]
    assert any(not torch.equal(b, a) for b, a in zip(before, after, strict=True)) == clips


def train_sgd(tiny_corpus: Path, sparse: bool) -> tuple[RNNLMModule, torch.Tensor]:
    """Twenty SGD steps clipped hard, as Lightning runs them, from one seed; and the table
    the run started from."""
    dm = LMDataModule(path=str(tiny_corpus), batch_size=4, seq_len=10)
    dm.setup("fit")
    torch.manual_seed(0)
    module = RNNLMModule(
        dm.vocab.to_dict(),
        ModelConfig(hidden_size=16, sparse_embedding=sparse),
        partial(torch.optim.SGD, lr=0.5),
        sample_tokens=0,
    )
    start = module.net.embedding.weight.detach().clone()
    quiet_trainer(max_steps=20, limit_val_batches=0, gradient_clip_val=0.1).fit(module, dm)
    return module, start


def test_a_sparse_embedding_trains_the_same_weights_as_a_dense_one(tiny_corpus: Path):
    """SGD's update of a row no batch looked up is zero either way, so both runs agree;
    clipping at 0.1 acts on every step, so its norm must count the table's gradient right."""
    (sparse, start), (dense, _) = train_sgd(tiny_corpus, True), train_sgd(tiny_corpus, False)
    assert sparse.net.embedding.sparse and not dense.net.embedding.sparse
    for (name, s), d in zip(sparse.state_dict().items(), dense.state_dict().values(), strict=True):
        torch.testing.assert_close(s, d, rtol=0, atol=1e-6, msg=name)
    assert not torch.allclose(sparse.net.embedding.weight, start)  # it did train
