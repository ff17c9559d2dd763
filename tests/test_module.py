import math
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from rnnlab.data.datamodule import LMDataModule
from rnnlab.nn.lm import ModelConfig
from rnnlab.training.callbacks.random_state import RandomStateCheckpoint
from rnnlab.training.callbacks.throughput import Throughput
from rnnlab.training.module import RNNLMModule
from tests.conftest import quiet_trainer


def make(
    tiny_corpus: Path, output: str = "softmax", cell: str = "rnn", **data
) -> tuple[LMDataModule, RNNLMModule]:
    dm = LMDataModule(path=str(tiny_corpus), **data)
    dm.setup("fit")
    torch.manual_seed(0)
    module = RNNLMModule(
        dm.vocab.to_dict(),
        ModelConfig(hidden_size=16, output=output, cell=cell),
        partial(torch.optim.Adam, lr=1e-2),
        sample_tokens=0,
    )
    return dm, module


@pytest.mark.parametrize("output", ["softmax", "adaptive"])
def test_val_ppl_is_exp_of_token_weighted_nll(tiny_corpus: Path, output: str):
    """By hand from the full logits; the adaptive model's are normalised log-probabilities."""
    dm, module = make(tiny_corpus, output, batch_size=4, seq_len=7, eval_batch_size=3)
    quiet_trainer(max_epochs=1, limit_train_batches=20).fit(module, dm)
    logged = quiet_trainer().validate(module, dm, verbose=False)[0]

    module.eval()
    nll, count, hidden, batch_ppl = 0.0, 0, None, []
    with torch.no_grad():
        for inputs, targets in dm.val_dataloader():
            logits, hidden = module.net(inputs, hidden)
            batch_nll = F.cross_entropy(
                logits.reshape(-1, logits.size(-1)).double(), targets.reshape(-1), reduction="sum"
            )
            nll, count = nll + float(batch_nll), count + targets.numel()
            batch_ppl.append(math.exp(float(batch_nll) / targets.numel()))
    assert count == 3 * (dm.num_tokens("val") // 3 - 1)  # every target of every row
    loss = nll / count
    assert logged["val/loss"] == pytest.approx(loss, rel=1e-6)
    assert logged["val/ppl"] == pytest.approx(math.exp(loss), rel=1e-6)
    assert logged["val/bpc"] == pytest.approx(loss / math.log(2), rel=1e-6)
    # the last batch is short, so a mean of per-batch perplexities would be a different number
    assert sum(batch_ppl) / len(batch_ppl) != pytest.approx(math.exp(loss), rel=1e-4)


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_training_carries_a_detached_state_between_batches(cell: str, tiny_corpus: Path):
    """Whatever the cell returns is carried: h, or the LSTM's pair (h, c)."""
    dm, module = make(tiny_corpus, cell=cell, batch_size=4, seq_len=10)
    first, second = list(dm.train_dataloader())[:2]
    first_loss = module.training_step(first, 0).item()
    carried = module.train_hidden
    tensors = list(carried) if cell == "lstm" else [carried]
    assert len(tensors) == (2 if cell == "lstm" else 1)
    assert all(t.shape == (1, 4, 16) and not t.requires_grad for t in tensors)
    loss = module.training_step(second, 1).item()
    with torch.no_grad():
        expected = module.net.loss(*second, carried)[0].item()
        fresh = module.net.loss(*second)[0].item()
    assert loss == pytest.approx(expected, rel=1e-6)
    assert loss != pytest.approx(fresh, rel=1e-5)
    assert module.training_step(first, 0).item() == pytest.approx(first_loss, rel=1e-6)


def test_sample_is_deterministic_and_leaves_global_rng_alone(tiny_corpus: Path):
    _, module = make(tiny_corpus, batch_size=4, seq_len=10)
    state = torch.get_rng_state()
    first = module.sample("the ", num_tokens=40, seed=3)
    assert torch.equal(state, torch.get_rng_state())
    assert first == module.sample("the ", num_tokens=40, seed=3)
    assert first.startswith("the ") and len(first) == 44
    assert first != module.sample("the ", num_tokens=40, seed=4)


def test_testing_a_checkpoint_keeps_the_runs_own_counters(tiny_corpus: Path):
    """trainer.test(ckpt_path=best) loads an older checkpoint: it must not rewind the run.

    Every owner of rnnlab's state in a checkpoint (the module, the throughput counter, the
    RNG states) restores it only when fitting.
    """
    _, module = make(tiny_corpus, batch_size=4, seq_len=10)
    throughput, rng = Throughput(), RandomStateCheckpoint()
    module.losses, throughput.tokens = {"val": 1.5, "best_val": 1.2}, 999
    saved = {"rnnlab": {"train_tokens": 10, "losses": {"val": 3.0}, "train_seconds": 1.0}}
    saved["rnnlab"]["rng"] = {"torch": torch.get_rng_state()}

    def load(fn: str) -> None:
        trainer = SimpleNamespace(state=SimpleNamespace(fn=fn))
        module._trainer = trainer
        module.on_load_checkpoint(saved)
        throughput.on_load_checkpoint(trainer, module, saved)
        rng.on_load_checkpoint(trainer, module, saved)

    load("test")
    assert (throughput.tokens, module.losses["val"], rng._restored) == (999, 1.5, None)
    load("fit")
    assert (throughput.tokens, throughput.seconds, module.losses) == (10, 1.0, {"val": 3.0})
    assert rng._restored is saved["rnnlab"]["rng"]
