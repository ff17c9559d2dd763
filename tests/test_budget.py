"""model/scheduler=budget: the decay by hand, the share of the budget each limit gives,
a run that ends at the floor, its checkpoint loading with weights_only, and a time budget
shorter than an epoch stopping the run within that epoch."""

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch.callbacks import Timer

from rnnlab.cli.train import train
from rnnlab.errors import UserError
from rnnlab.training.budget import BudgetDecay, budget_spent
from tests.conftest import compose_train


def scheduler(**options) -> BudgetDecay:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5)
    return BudgetDecay(optimizer, **options)


@pytest.mark.parametrize(
    ("shape", "spent", "factor"),
    [
        ("linear", 0.0, 1.0),
        ("linear", 0.25, 0.1 + 0.9 * 0.75),
        ("linear", 1.0, 0.1),
        ("cosine", 0.25, 0.1 + 0.9 * (1 + math.cos(math.pi / 4)) / 2),
        ("cosine", 0.5, 0.1 + 0.9 * 0.5),
        ("cosine", 1.0, 0.1),
    ],
)
def test_the_learning_rate_is_the_decay_of_the_budget_spent(shape: str, spent: float, factor):
    spent_now = {"p": 0.0}
    decay = scheduler(shape=shape, floor=0.1, progress=lambda: spent_now["p"])
    assert decay.optimizer.param_groups[0]["lr"] == 0.5
    spent_now["p"] = spent
    decay.optimizer.step()
    decay.step()
    assert decay.optimizer.param_groups[0]["lr"] == pytest.approx(0.5 * factor, rel=1e-12)
    assert "progress" not in decay.state_dict()


@pytest.mark.parametrize(
    ("spent", "factor"),
    [(0.0, 1.0), (0.6, 1.0), (0.7, 0.1 + 0.9 * 0.75), (0.9, 0.1 + 0.9 * 0.25), (1.0, 0.1)],
)
def test_a_hold_keeps_the_first_rate_then_decays_over_the_rest(spent: float, factor: float):
    decay = scheduler(floor=0.1, hold=0.6, progress=lambda: spent)
    decay.optimizer.step()
    decay.step()
    assert decay.optimizer.param_groups[0]["lr"] == pytest.approx(0.5 * factor, rel=1e-12)


def test_a_bad_shape_floor_or_hold_is_one_sentence():
    with pytest.raises(UserError, match="model.scheduler.shape"):
        scheduler(shape="step")
    with pytest.raises(UserError, match="model.scheduler.floor"):
        scheduler(floor=1.5)
    with pytest.raises(UserError, match=r"model.scheduler.hold must be in \[0, 1\)"):
        scheduler(hold=1.0)


def trainer(elapsed=None, duration=None, **limits) -> SimpleNamespace:
    callbacks = []
    if duration is not None:
        timer = Timer(duration={"seconds": duration})
        timer.time_elapsed = lambda stage="train": elapsed
        callbacks.append(timer)
    settings = {"max_steps": -1, "max_epochs": None, "num_training_batches": 50.0}
    return SimpleNamespace(callbacks=callbacks, accumulate_grad_batches=1, **{**settings, **limits})


def test_the_budget_is_the_limit_that_ends_the_run_first():
    assert budget_spent(trainer(elapsed=30.0, duration=120, global_step=1)) == 0.25
    assert budget_spent(trainer(global_step=50, max_steps=200)) == 0.25
    assert budget_spent(trainer(global_step=50, max_epochs=4)) == 0.25  # 50 of 4 x 50 steps
    both = trainer(elapsed=30.0, duration=120, global_step=50, max_epochs=2)
    assert budget_spent(both) == 0.5
    assert budget_spent(trainer(elapsed=200.0, duration=120, global_step=9)) == 1.0
    assert budget_spent(trainer(global_step=9, num_training_batches=math.inf)) == 0.0


def test_a_run_on_the_budget_schedule_ends_at_the_floor(tiny_corpus: Path, tmp_path: Path):
    cfg = compose_train(
        [
            f"data.path={tiny_corpus}",
            "model/scheduler=budget",
            "model.scheduler.floor=0.05",
            "model.hidden_size=16",
            "model.sample_tokens=0",
            "data.batch_size=4",
            "data.seq_len=8",
            "trainer.max_epochs=2",
            "trainer.limit_train_batches=10",
            "logger=csv",
        ],
        output_dir=tmp_path,
    )
    train(cfg)
    checkpoint = torch.load(tmp_path / "checkpoints/last.ckpt", weights_only=True)
    lr = checkpoint["optimizer_states"][0]["param_groups"][0]["lr"]
    assert lr == pytest.approx(3e-3 * 0.05, rel=1e-9)  # 20 of 20 steps spent
    assert checkpoint["lr_schedulers"][0]["last_epoch"] == 20


def test_a_time_budget_shorter_than_an_epoch_stops_the_run_within_it(
    tiny_corpus: Path, tmp_path: Path
):
    """Lightning trains on past max_time until min_epochs is met: the default must not
    set one, or a corpus whose epoch outlasts the budget overruns it by the epoch."""
    cfg = compose_train(
        [
            f"data.path={tiny_corpus}",
            "model.hidden_size=16",
            "model.sample_tokens=0",
            "data.batch_size=4",
            "data.seq_len=8",
            "trainer.max_epochs=-1",
            "trainer.max_time=00:00:00:00",
            "trainer.limit_train_batches=10",
            "logger=csv",
        ],
        output_dir=tmp_path,
    )
    train(cfg)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["steps"] == 0  # with min_epochs=1 it trains its whole 10-batch epoch
