"""GradientMonitor: per-layer gradient norms (before clipping) and histograms in TensorBoard."""

import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import (
    HISTOGRAMS,
    SCALARS,
    EventAccumulator,
)

from rnnlab.cli.train import train
from rnnlab.data.vocab import Vocab
from rnnlab.nn.lm import ModelConfig
from rnnlab.training.callbacks.gradients import GradientMonitor
from rnnlab.training.module import RNNLMModule
from tests.conftest import TINY_RUN, TINY_TEXT, compose_train


def events(directory: Path) -> EventAccumulator:
    accumulator = EventAccumulator(str(directory), size_guidance={SCALARS: 0, HISTOGRAMS: 0})
    accumulator.Reload()
    return accumulator


def monitored(module: RNNLMModule, tmp_path: Path) -> EventAccumulator:
    """What GradientMonitor logs after one backward pass of ``module`` over the tiny text."""
    vocab = Vocab.build(TINY_TEXT, "char")
    ids = torch.tensor(vocab.encode(TINY_TEXT[:200])).view(4, 50)
    module.net.loss(ids[:, :-1], ids[:, 1:])[0].backward()
    logger = TensorBoardLogger(tmp_path, name="", version="")
    trainer = SimpleNamespace(global_step=0, is_global_zero=True, loggers=[logger])
    GradientMonitor(every_n_steps=1, histogram_every_n_steps=1).on_before_optimizer_step(
        trainer, module, None
    )
    logger.experiment.flush()
    return events(tmp_path)


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("backend", ["builtin", "custom"])
def test_logged_norms_are_the_gradients_norms(cell: str, backend: str, tmp_path: Path):
    """Same tags on both backends: the parameters are named as PyTorch names them."""
    vocab = Vocab.build(TINY_TEXT, "char").to_dict()
    module = RNNLMModule(
        vocab, ModelConfig(cell=cell, backend=backend, hidden_size=16, num_layers=2)
    )
    logged = monitored(module, tmp_path)
    names = [name for name, _ in module.named_parameters()]
    assert "net.rnn.weight_hh_l1" in names
    for name, param in module.named_parameters():
        (event,) = logged.Scalars(f"grad_norm/{name}")
        assert event.value == pytest.approx(param.grad.norm().item(), rel=1e-6)
        assert f"weights/{name}" in logged.Tags()[HISTOGRAMS]
        assert f"gradients/{name}" in logged.Tags()[HISTOGRAMS]
    total = math.sqrt(sum(p.grad.norm().item() ** 2 for p in module.parameters()))
    assert logged.Scalars("grad_norm/total")[0].value == pytest.approx(total, rel=1e-5)


def test_a_sparse_embedding_gradient_is_logged_as_its_dense_self(tmp_path: Path):
    """model.sparse_embedding: the table's norm sums each repeated id's rows first."""
    vocab = Vocab.build(TINY_TEXT, "char").to_dict()
    module = RNNLMModule(vocab, ModelConfig(hidden_size=16, sparse_embedding=True))
    logged = monitored(module, tmp_path)
    grad = module.net.embedding.weight.grad
    assert grad.is_sparse and not grad.is_coalesced()
    (event,) = logged.Scalars("grad_norm/net.embedding.weight")
    assert event.value == pytest.approx(grad.to_dense().norm().item(), rel=1e-6)
    assert "gradients/net.embedding.weight" in logged.Tags()[HISTOGRAMS]


def test_callbacks_gradients_logs_every_n_steps_in_a_run(tiny_corpus: Path, tmp_path: Path):
    cfg = compose_train(
        [
            "callbacks=gradients",
            f"data.path={tiny_corpus}",
            *TINY_RUN,
            "trainer.max_epochs=1",
            "callbacks.gradient_monitor.histogram_every_n_steps=10",
        ],
        output_dir=tmp_path,
    )
    train(cfg)
    logged = events(tmp_path / "tensorboard")
    steps = [e.step for e in logged.Scalars("grad_norm/net.rnn.weight_hh_l0")]
    assert steps == list(range(0, 30, 5))  # log_every_n_steps=5 over 30 batches
    assert all(math.isfinite(e.value) and e.value > 0 for e in logged.Scalars("grad_norm/total"))
    histograms = logged.Histograms("gradients/net.rnn.weight_hh_l0")
    assert [h.step for h in histograms] == [0, 10, 20]
