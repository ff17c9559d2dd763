"""Nothing outside the core knows which backend runs: same losses, swappable checkpoints."""

from functools import partial
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from rnnlab.data.datamodule import LMDataModule
from rnnlab.nn.lm import RNNLM, ModelConfig
from rnnlab.training.module import RNNLMModule
from tests.conftest import quiet_trainer


def test_language_model_trains_identically_on_both_backends(tiny_corpus: Path):
    """50 steps from the same seed: the losses agree within 1e-4 relative at every step."""
    dm = LMDataModule(path=str(tiny_corpus), batch_size=8, seq_len=20)
    dm.setup("fit")
    batches = list(dm.train_dataloader())
    losses = {}
    for backend in ("builtin", "custom"):
        torch.manual_seed(0)
        model = RNNLM(len(dm.vocab), ModelConfig(hidden_size=64, num_layers=2, backend=backend))
        optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
        hidden, losses[backend] = None, []
        for step in range(50):
            inputs, targets = batches[step % len(batches)]
            logits, hidden = model(inputs, hidden)
            hidden = hidden.detach()
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            losses[backend].append(loss.item())
    assert losses["builtin"][-1] < losses["builtin"][0] - 0.5  # it did learn
    for step, (a, b) in enumerate(zip(losses["builtin"], losses["custom"], strict=True)):
        assert b == pytest.approx(a, rel=1e-4), f"step {step}"


def test_checkpoint_moves_between_backends(tiny_corpus: Path, tmp_path: Path):
    dm = LMDataModule(path=str(tiny_corpus), batch_size=4, seq_len=16)
    dm.setup("fit")
    torch.manual_seed(0)
    module = RNNLMModule(
        dm.vocab.to_dict(), partial(torch.optim.Adam, lr=1e-2), hidden_size=24, sample_tokens=0
    )
    trainer = quiet_trainer(max_epochs=1, limit_train_batches=10)
    trainer.fit(module, dm)
    trainer.save_checkpoint(tmp_path / "builtin.ckpt")
    checkpoint = torch.load(tmp_path / "builtin.ckpt", weights_only=True)
    assert checkpoint["hyper_parameters"]["backend"] == "builtin"

    restored = RNNLMModule.load_from_checkpoint(tmp_path / "builtin.ckpt", backend="custom")
    assert restored.net.backend == "custom" and restored.vocab == module.vocab
    original = quiet_trainer().validate(module, dm, verbose=False)[0]["val/loss"]
    swapped = quiet_trainer().validate(restored, dm, verbose=False)[0]["val/loss"]
    assert swapped == pytest.approx(original, rel=1e-5)
