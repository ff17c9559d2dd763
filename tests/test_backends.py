"""Nothing outside the core knows which backend or cell runs: same losses, swappable checkpoints."""

from functools import partial
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from rnnlab.data.datamodule import LMDataModule
from rnnlab.nn.cores import detached
from rnnlab.nn.lm import RNNLM, ModelConfig
from rnnlab.nn.sampling import sample_text
from rnnlab.training.module import RNNLMModule
from tests.conftest import quiet_trainer

CELLS = ("rnn", "gru", "lstm")


@pytest.mark.parametrize("cell", CELLS)
def test_language_model_trains_identically_on_both_backends(cell: str, tiny_corpus: Path):
    """50 steps from the same seed: the losses agree within 1e-4 relative at every step."""
    dm = LMDataModule(path=str(tiny_corpus), batch_size=8, seq_len=20)
    dm.setup("fit")
    batches = list(dm.train_dataloader())
    losses = {}
    for backend in ("builtin", "custom"):
        torch.manual_seed(0)
        config = ModelConfig(cell=cell, hidden_size=64, num_layers=2, backend=backend)
        model = RNNLM(len(dm.vocab), config)
        optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
        hidden, losses[backend] = None, []
        for step in range(50):
            inputs, targets = batches[step % len(batches)]
            logits, hidden = model(inputs, hidden)
            hidden = detached(hidden)
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            losses[backend].append(loss.item())
    assert losses["builtin"][-1] < losses["builtin"][0] - 0.5  # it did learn
    for step, (a, b) in enumerate(zip(losses["builtin"], losses["custom"], strict=True)):
        assert b == pytest.approx(a, rel=1e-4), f"step {step}"


@pytest.mark.parametrize("cell", CELLS)
def test_checkpoint_moves_between_backends(cell: str, tiny_corpus: Path, tmp_path: Path):
    """Trained on PyTorch's cell, it evaluates and samples unchanged on rnnlab's."""
    dm = LMDataModule(path=str(tiny_corpus), batch_size=4, seq_len=16)
    dm.setup("fit")
    torch.manual_seed(0)
    optimizer = partial(torch.optim.Adam, lr=1e-2)
    module = RNNLMModule(
        dm.vocab.to_dict(), ModelConfig(cell=cell, hidden_size=24), optimizer, sample_tokens=0
    )
    trainer = quiet_trainer(max_epochs=1, limit_train_batches=10)
    trainer.fit(module, dm)
    trainer.save_checkpoint(tmp_path / "builtin.ckpt")
    checkpoint = torch.load(tmp_path / "builtin.ckpt", weights_only=True)
    assert (checkpoint["hyper_parameters"]["backend"], checkpoint["hyper_parameters"]["cell"]) == (
        "builtin",
        cell,
    )

    restored = RNNLMModule.load_from_checkpoint(tmp_path / "builtin.ckpt", backend="custom")
    assert restored.net.backend == "custom" and restored.vocab == module.vocab
    assert restored.net.config.cell == cell
    original = quiet_trainer().validate(module, dm, verbose=False)[0]["val/loss"]
    swapped = quiet_trainer().validate(restored, dm, verbose=False)[0]["val/loss"]
    assert swapped == pytest.approx(original, rel=1e-5)
    texts = [sample_text(m.net, m.vocab, "line", 40, greedy=True) for m in (module, restored)]
    assert texts[0] == texts[1]


@pytest.mark.parametrize("cell", CELLS)
def test_the_parameters_are_named_alike_on_both_backends(cell: str):
    """So gradient norms and histograms in TensorBoard carry the same tags on both."""
    names = {
        backend: [
            n for n, _ in RNNLM(11, ModelConfig(cell=cell, backend=backend)).named_parameters()
        ]
        for backend in ("builtin", "custom")
    }
    assert names["builtin"] == names["custom"]
    assert "rnn.weight_hh_l0" in names["custom"]
