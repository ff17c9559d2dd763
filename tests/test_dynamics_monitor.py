"""callbacks=dynamics: the probes' tags in a real run, and a run that trains exactly as without."""

import math
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import (
    IMAGES,
    SCALARS,
    EventAccumulator,
)

from rnnlab.cli.train import train
from rnnlab.errors import UserError
from rnnlab.nn.cores import GATES
from rnnlab.report.compare import compare
from rnnlab.training.callbacks.dynamics import DynamicsMonitor
from tests.conftest import TINY_RUN, compose_train

#: the tiny corpus's validation split holds 289 tokens: 2 rows of 144, room for a window of 100
BASE = (*TINY_RUN, "trainer.max_epochs=1", "model.num_layers=2")
PROBED = ("callbacks=dynamics", "callbacks.dynamics_monitor.batch_size=2")
RUN = (*BASE, *PROBED)


def events(directory: Path) -> EventAccumulator:
    accumulator = EventAccumulator(str(directory), size_guidance={SCALARS: 0, IMAGES: 0})
    accumulator.Reload()
    return accumulator


def test_a_blocks_run_of_a_linear_cell_logs_its_decays(tiny_corpus: Path, tmp_path: Path):
    """Residual blocks of minGRU: each block's mixer is a layer of the probes, and its
    spectrum entry is the spread of a_t (no W_hh)."""
    overrides = [f"data.path={tiny_corpus}", *RUN, "model.arch=blocks", "model.cell=mingru"]
    overrides += ["model.backend=custom", "model.conv_kernel=2"]
    train(compose_train(overrides, output_dir=tmp_path))
    scalars = set(events(tmp_path / "tensorboard").Tags()[SCALARS])
    for k in (0, 1):
        expected = {f"dynamics/reach/l{k}", f"dynamics/jacobian_norm/l{k}"}
        expected |= {f"dynamics/spectrum/l{k}/a/{what}" for what in ("mean", "above_0.99")}
        expected |= {f"dynamics/saturation/l{k}/{name}" for name in ("z", "a")}
        assert expected <= scalars, expected - scalars


@pytest.mark.parametrize(("cell", "backend"), [("rnn", "custom"), ("lstm", "builtin")])
def test_a_run_logs_every_probe_after_each_validation(
    cell: str, backend: str, tiny_corpus: Path, tmp_path: Path
):
    overrides = [f"data.path={tiny_corpus}", *RUN, f"model.cell={cell}", f"model.backend={backend}"]
    train(compose_train([*overrides, "trainer.val_check_interval=10"], output_dir=tmp_path))
    logged = events(tmp_path / "tensorboard")
    scalars = set(logged.Tags()[SCALARS])
    activations = {"rnn": ["h"], "lstm": ["i", "f", "g", "o", "tanh_c"]}[cell]
    for k in (0, 1):
        expected = {f"dynamics/grad/l{k}/lag_{j}" for j in (1, 10, 25, 50, 100)}
        expected |= {f"dynamics/reach/l{k}", f"dynamics/jacobian_norm/l{k}"}
        expected |= {f"dynamics/saturation/l{k}/{a}" for a in activations}
        expected |= {
            f"dynamics/spectrum/l{k}/{gate}/{what}"
            for gate in GATES[cell]
            for what in ("sigma_max", "radius")
        }
        assert expected <= scalars
    reaches = logged.Scalars("dynamics/reach/l0")
    assert [e.step for e in reaches] == [10, 20, 30]  # after each validation, none at sanity check
    assert all(1 <= e.value <= 100 and e.value == int(e.value) for e in reaches)
    lag_1 = logged.Scalars("dynamics/grad/l1/lag_1")
    assert all(math.isfinite(e.value) and e.value > 0 for e in lag_1)
    (image, *_) = logged.Images("dynamics/grad_through_time")
    assert image.encoded_image_string.startswith(b"\x89PNG")


def test_the_probe_leaves_training_bit_identical(tiny_corpus: Path, tmp_path: Path):
    """Same seed, with and without probes every 3 steps: the same weights and losses."""
    results = []
    for callbacks in ("default", "dynamics"):
        out = tmp_path / callbacks
        overrides = [f"data.path={tiny_corpus}", *BASE, "model.dropout=0.2"]
        if callbacks == "dynamics":
            overrides += [*PROBED, "callbacks.dynamics_monitor.every_n_steps=3"]
        train(compose_train(overrides, output_dir=out))
        state = torch.load(out / "checkpoints/last.ckpt", weights_only=True)["state_dict"]
        losses = [e.value for e in events(out / "tensorboard").Scalars("train/loss")]
        results.append((state, losses, events(out / "tensorboard").Tags()[SCALARS]))
    (plain, plain_losses, plain_tags), (probed, probed_losses, probed_tags) = results
    assert "dynamics/reach/l0" in probed_tags and "dynamics/reach/l0" not in plain_tags
    assert plain_losses == probed_losses and len(plain_losses) == 6
    assert plain.keys() == probed.keys()
    assert all(torch.equal(plain[k], probed[k]) for k in plain)


def test_a_short_validation_split_shrinks_the_window(tiny_corpus: Path, tmp_path: Path):
    overrides = [f"data.path={tiny_corpus}", *RUN, "callbacks.dynamics_monitor.window=500"]
    with pytest.warns(UserWarning, match="probe window is 143 steps, not 500"):
        train(compose_train(overrides, output_dir=tmp_path))
    reaches = events(tmp_path / "tensorboard").Scalars("dynamics/reach/l0")
    assert reaches and all(e.value <= 143 for e in reaches)


def test_bad_settings_get_one_sentence():
    with pytest.raises(UserError, match="callbacks.dynamics_monitor.window must be"):
        DynamicsMonitor(window=0)


def test_the_compare_report_shows_the_final_reach_and_its_curve(tiny_corpus: Path, tmp_path: Path):
    run = tmp_path / "run"
    train(compose_train([f"data.path={tiny_corpus}", *RUN, "model.num_layers=1"], output_dir=run))
    report = compare([run], tmp_path / "report", verbose=False)
    last = events(run / "tensorboard").Scalars("dynamics/reach/l0")[-1].value
    assert report["runs"][0]["grad_reach"] == last
    assert report["lines"]["gradient_reach_by_step"] == 1
    assert (tmp_path / "report/gradient_reach_by_step.png").is_file()
    header = (tmp_path / "report/comparison.csv").read_text().splitlines()[0]
    assert "grad_reach" in header.split(",")
