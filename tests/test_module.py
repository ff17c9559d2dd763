import math
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from rnnlab.data.datamodule import LMDataModule
from rnnlab.module import RNNLMModule


def quiet_trainer(**kwargs) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,
        **kwargs,
    )


def make(tiny_corpus: Path, output: str = "softmax", **data) -> tuple[LMDataModule, RNNLMModule]:
    dm = LMDataModule(path=str(tiny_corpus), **data)
    dm.setup("fit")
    torch.manual_seed(0)
    module = RNNLMModule(
        dm.vocab.to_dict(),
        partial(torch.optim.Adam, lr=1e-2),
        hidden_size=16,
        sample_tokens=0,
        output=output,
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


def test_training_carries_a_detached_state_between_batches(tiny_corpus: Path):
    dm, module = make(tiny_corpus, batch_size=4, seq_len=10)
    first, second = list(dm.train_dataloader())[:2]
    first_loss = module.training_step(first, 0).item()
    carried = module.train_hidden
    assert carried is not None and not carried.requires_grad
    loss = module.training_step(second, 1).item()
    with torch.no_grad():
        expected = module.net.loss(*second, carried)[0].item()
        fresh = module.net.loss(*second)[0].item()
    assert loss == pytest.approx(expected, rel=1e-6)
    assert loss != pytest.approx(fresh, rel=1e-4)
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
    """trainer.test(ckpt_path=best) loads an older checkpoint: it must not rewind the run."""
    _, module = make(tiny_corpus, batch_size=4, seq_len=10)
    module.train_tokens, module.losses = 999, {"val": 1.5, "best_val": 1.2}
    saved = {"rnnlab": {"train_tokens": 10, "losses": {"val": 3.0}, "train_seconds": 1.0}}
    module._trainer = SimpleNamespace(state=SimpleNamespace(fn="test"))
    module.on_load_checkpoint(saved)
    assert (module.train_tokens, module.losses["val"]) == (999, 1.5)
    module._trainer = SimpleNamespace(state=SimpleNamespace(fn="fit"))
    module.on_load_checkpoint({**saved, "rnnlab": {**saved["rnnlab"], "rng": None}})
    assert (module.train_tokens, module.losses) == (10, {"val": 3.0})
