"""Resume in place and exactly; checkpoints that survive kills; Ctrl-C; a non-finite loss;
runs moved since, runs without checkpoints, and runs saved by rnnlab's first layout."""

import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rnnlab.cli.evaluate import evaluate
from rnnlab.cli.sample import samples
from rnnlab.cli.train import train
from rnnlab.training.checkpoint import AtomicCheckpointIO
from tests.conftest import REPO, TINY_RUN, TINY_TEXT, compose_train, one_sentence, run_cli

#: dropout draws from the global RNG every step, so a resume must restore it too
RUN = (
    *TINY_RUN,
    "trainer.max_epochs=3",
    "model.dropout=0.3",
    "trainer.deterministic=true",
    "checkpoint.every_n_train_steps=7",
)
LEGACY_RUN = REPO / "tests/legacy_run"


def signal_at(step: int, name: str) -> list[str]:
    prefix = "+callbacks.signal"
    return [
        f"{prefix}._target_=tests.signals.SignalAtStep",
        f"{prefix}.step={step}",
        f"{prefix}.signal={name}",
    ]


def train_in_a_process(root: Path, name: str, *overrides: str) -> subprocess.CompletedProcess[str]:
    """rnnlab-train as its own process (it is signalled), with tests.signals importable."""
    args = [f"data.path={root / 'tiny.txt'}", *RUN, f"hydra.run.dir={root / name}", *overrides]
    return run_cli("train", *args, cwd=root, env={"PYTHONPATH": str(REPO)})


def checkpoint_step(path: Path) -> int:
    return torch.load(path, weights_only=True)["global_step"]


def metrics_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with the corpus and ``whole``: the run the interrupted ones must equal."""
    root = tmp_path_factory.mktemp("resume")
    (root / "tiny.txt").write_text(TINY_TEXT, encoding="utf-8")
    train(compose_train([f"data.path={root / 'tiny.txt'}", *RUN], output_dir=root / "whole"))
    return root


def assert_same_run(resumed: Path, whole: Path) -> None:
    got, want = metrics_of(resumed), metrics_of(whole)
    for split in ("val", "best_val", "test"):
        assert got[split]["loss"] == pytest.approx(want[split]["loss"], rel=1e-5), split
    assert (got["steps"], got["train_tokens"]) == (want["steps"], want["train_tokens"])


def test_sigkill_mid_step_then_resume_ends_like_an_uninterrupted_run(cli, root: Path, monkeypatch):
    killed = train_in_a_process(root, "killed", *signal_at(40, "SIGKILL"))
    assert killed.returncode == -9
    last = root / "killed/checkpoints/last.ckpt"
    assert checkpoint_step(last) == 35  # mid-epoch 2 (steps 30-59), 5 steps lost
    assert not (root / "killed/metrics.json").exists()

    monkeypatch.chdir(root)
    resumed = cli("train", f"resume={root / 'killed'}")
    assert resumed.code == 0, resumed.err[-3000:]
    assert_same_run(root / "killed", root / "whole")
    # in place: the same TensorBoard run and checkpoints, Hydra's first record kept
    assert (root / "killed/.hydra/overrides.yaml").read_text().count("SignalAtStep") == 1
    assert len(list((root / "killed/.hydra").glob("resumed-*"))) == 1
    assert sorted(p.name for p in (root / "killed").iterdir() if p.is_dir()) == [
        ".hydra",
        "checkpoints",
        "tensorboard",
    ]


def test_ctrl_c_saves_after_the_batch_and_says_how_to_resume(cli, root: Path, monkeypatch):
    stopped = train_in_a_process(root, "stopped", *signal_at(12, "SIGINT"))
    assert stopped.returncode == 1
    assert "Traceback" not in stopped.stdout + stopped.stderr
    assert f"resume with:  rnnlab-train resume={root / 'stopped'}" in stopped.stdout
    assert checkpoint_step(root / "stopped/checkpoints/last.ckpt") == 13  # step 12 finished

    monkeypatch.chdir(root)
    resumed = cli("train", f"resume={root / 'stopped'}", "trainer.max_epochs=3")
    assert resumed.code == 0, resumed.err[-3000:]
    assert_same_run(root / "stopped", root / "whole")


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_a_gated_cell_resumes_exactly(cell: str, cli, root: Path, tmp_path: Path, monkeypatch):
    """The LSTM's carried pair and the GRU's state go into checkpoints as plain tensors
    (weights_only) and come back: a crash at step 40, resumed from step 35, ends where an
    uninterrupted run does (on the hand-written backend; the state is the same tensors on
    PyTorch's)."""
    monkeypatch.chdir(tmp_path)
    runs = {}
    for name, extra in (
        ("whole", []),
        (
            "crashed",
            ["+callbacks.crash._target_=tests.signals.CrashAtStep", "+callbacks.crash.step=40"],
        ),
    ):
        overrides = [
            f"data.path={root / 'tiny.txt'}",
            *RUN,
            f"model.cell={cell}",
            "model.backend=custom",
            *extra,
        ]
        runs[name] = tmp_path / name
        args = [*overrides, f"hydra.run.dir={runs[name]}", "logger=csv"]
        result = cli("train", *args)
        assert result.code == (1 if extra else 0), result.err[-3000:]
    last = torch.load(runs["crashed"] / "checkpoints/last.ckpt", weights_only=True)
    assert last["global_step"] == 35
    carried = last["rnnlab"]["train_hidden"]
    assert all(isinstance(t, torch.Tensor) for t in (carried if cell == "lstm" else [carried]))
    result = cli("train", f"resume={runs['crashed']}")
    assert result.code == 0, result.err[-3000:]
    assert_same_run(runs["crashed"], runs["whole"])


def test_a_blocks_model_resumes_exactly_after_sigkill(cli, root: Path, monkeypatch):
    """Residual blocks carry nested states (each block's mixer state and convolution memory):
    they go into checkpoints as plain tensors and a SIGKILLed run resumes to the same end."""
    blocks = [
        "model.arch=blocks",
        "model.cell=mingru",
        "model.backend=custom",
        "model.conv_kernel=3",
        "model.num_layers=2",
    ]
    whole = root / "blocks-whole"
    train(compose_train([f"data.path={root / 'tiny.txt'}", *RUN, *blocks], output_dir=whole))
    killed = train_in_a_process(root, "blocks-killed", *blocks, *signal_at(40, "SIGKILL"))
    assert killed.returncode == -9
    last = torch.load(root / "blocks-killed/checkpoints/last.ckpt", weights_only=True)
    assert last["global_step"] == 35
    (mixer_state, memory), _ = last["rnnlab"]["train_hidden"]  # block 0's, then block 1's
    assert mixer_state.shape[0] == 1 and memory.shape[0] == 2  # one layer; k - 1 inputs
    monkeypatch.chdir(root)
    resumed = cli("train", f"resume={root / 'blocks-killed'}")
    assert resumed.code == 0, resumed.err[-3000:]
    assert_same_run(root / "blocks-killed", whole)


def test_a_moved_run_resumes_where_it_is_now(cli, root: Path, tmp_path: Path, monkeypatch):
    """Its saved config names the old directory; the resumed run writes into the new one."""
    moved = tmp_path / "moved"
    shutil.copytree(root / "whole", moved)
    before = {p: p.read_bytes() for p in (root / "whole/checkpoints").iterdir()}
    monkeypatch.chdir(tmp_path)
    result = cli("train", f"resume={moved}", "trainer.max_steps=100", "trainer.max_epochs=10")
    assert result.code == 0, result.err[-3000:]
    assert (metrics_of(moved)["steps"], checkpoint_step(moved / "checkpoints/last.ckpt")) == (
        100,
        100,
    )
    assert {p: p.read_bytes() for p in (root / "whole/checkpoints").iterdir()} == before
    assert metrics_of(root / "whole")["steps"] == 90


@pytest.mark.parametrize(
    ("make", "overrides", "message"),
    [
        ("nothing", [], r"resume=\S+ is not a run to resume: it needs config.yaml"),
        ("run", ["model.hidden_size=64"], r"only trainer.max_epochs, .* not model.hidden_size"),
        (
            "no checkpoints",
            [],
            r"resume=\S+ cannot go on: that run was trained with checkpoint=none",
        ),
        ("no last.ckpt", [], r"resume=\S+ cannot go on: \S+/last.ckpt does not exist"),
    ],
)
def test_resume_mistakes_are_one_sentence(
    cli, root: Path, tmp_path: Path, monkeypatch, make, overrides, message
):
    target = {"nothing": tmp_path, "run": root / "whole"}.get(make, tmp_path / "run")
    if make in ("no checkpoints", "no last.ckpt"):
        shutil.copytree(root / "whole", target)
        shutil.rmtree(target / "checkpoints")
        if make == "no checkpoints":  # as a run with checkpoint=none saves its config
            text = (target / "config.yaml").read_text()
            start = text.index("checkpoint:\n")
            end = text.index("\n", text.index("  mode: min", start))
            (target / "config.yaml").write_text(text[:start] + "checkpoint: {}" + text[end:])
    monkeypatch.chdir(tmp_path)
    sentence = one_sentence(cli("train", f"resume={target}", *overrides))
    assert re.search(message, sentence), sentence


def test_a_run_with_callbacks_none_can_be_resumed(cli, root: Path, tmp_path: Path, monkeypatch):
    first = [f"data.path={root / 'tiny.txt'}", *TINY_RUN, "trainer.max_epochs=1", "callbacks=none"]
    train(compose_train(first, output_dir=tmp_path / "run"))
    monkeypatch.chdir(tmp_path)
    result = cli("train", f"resume={tmp_path / 'run'}", "trainer.max_epochs=2")
    assert result.code == 0, result.err[-3000:]
    assert metrics_of(tmp_path / "run")["steps"] == 60


@pytest.mark.parametrize("callbacks", ["default", "none"])
def test_a_non_finite_loss_stops_naming_the_step_and_keeps_good_checkpoints(
    cli, root: Path, tmp_path: Path, callbacks: str
):
    """Whatever callbacks= says: the guard is not one of the callbacks a user picks."""
    args = [f"data.path={root / 'tiny.txt'}", *RUN, f"hydra.run.dir={tmp_path / 'diverged'}"]
    result = cli(
        "train",
        *args,
        f"callbacks={callbacks}",
        "model.optimizer._target_=torch.optim.SGD",
        "model.optimizer.lr=1e38",
        "trainer.gradient_clip_val=null",
        "checkpoint.every_n_train_steps=1",
    )
    sentence = one_sentence(result)
    pattern = r"training stopped: the loss became NaN or infinite after step (\d+) .*"
    found = re.fullmatch(pattern, sentence)
    assert found, sentence
    last = torch.load(tmp_path / "diverged/checkpoints/last.ckpt", weights_only=True)
    assert last["global_step"] == int(found.group(1))  # the step before the bad one
    assert all(torch.isfinite(w).all() for w in last["state_dict"].values())


def test_a_failed_save_leaves_the_previous_checkpoint_whole(tmp_path: Path):
    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("fails halfway through the file")

    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"w": torch.arange(10.0)}, path)
    with pytest.raises(RuntimeError, match="halfway"):
        io.save_checkpoint({"w": torch.zeros(1_000_000), "z": Unpicklable()}, path)
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.arange(10.0))
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary file left


def test_sigkill_while_saving_leaves_a_loadable_checkpoint(tmp_path: Path):
    path = tmp_path / "last.ckpt"
    saver = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, torch\n"
            "from rnnlab.training.checkpoint import AtomicCheckpointIO\n"
            "io = AtomicCheckpointIO()\n"
            "for i in range(10**6):\n"
            "    w = torch.full((4_000_000,), float(i))\n"
            "    io.save_checkpoint({'i': i, 'w': w}, sys.argv[1])\n"
            "    print(i, flush=True)\n",
            str(path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    for _ in range(3):  # a few whole saves, then a kill somewhere inside the next one
        saver.stdout.readline()
    saver.kill()
    saver.wait()
    checkpoint = torch.load(path, weights_only=True)
    assert checkpoint["w"].shape == (4_000_000,)
    assert torch.all(checkpoint["w"] == checkpoint["i"])
    assert math.isfinite(checkpoint["w"][0].item())


# -- a run saved by rnnlab's first layout (tests/legacy_run/expected.json says how) --------
@pytest.fixture
def legacy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the stored legacy run, beside the corpus it was trained on (``tiny.txt``)."""
    shutil.copytree(LEGACY_RUN, tmp_path / "run")
    (tmp_path / "tiny.txt").write_text(TINY_TEXT, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    return tmp_path / "run"


def expected() -> dict:
    return json.loads((LEGACY_RUN / "expected.json").read_text())


def test_a_legacy_run_resumes_to_the_numbers_the_old_code_reached(cli, legacy: Path):
    result = cli("train", f"resume={legacy}", "trainer.max_epochs=2")
    assert result.code == 0, result.err[-3000:]
    got, want = metrics_of(legacy), expected()["resumed_to_2_epochs"]
    for split in ("val", "best_val", "test"):
        assert got[split]["loss"] == pytest.approx(want[split]["loss"], rel=1e-6), split
    assert (got["steps"], got["train_tokens"]) == (want["steps"], want["train_tokens"])
    assert checkpoint_step(legacy / "checkpoints/last.ckpt") == 120
    assert len(list(legacy.glob("checkpoints/best-*.ckpt"))) == 1  # where it is now


@pytest.mark.parametrize("backend", ["builtin", "custom"])
def test_a_legacy_checkpoint_samples_the_text_the_old_code_sampled(legacy: Path, backend: str):
    ckpt = legacy / "checkpoints/last.ckpt"
    common = [f"ckpt_path={ckpt}", "prompt=line", "num_tokens=60", f"backend={backend}"]
    (greedy,) = samples(compose_train([*common, "greedy=true"], name="sample"))
    (seeded,) = samples(compose_train([*common, "seed=3"], name="sample"))
    assert (greedy, seeded) == (expected()["samples"]["greedy"], expected()["samples"]["seed3"])


def test_a_legacy_checkpoint_evaluates_to_its_own_test_numbers(legacy: Path):
    cfg = compose_train(
        [
            f"ckpt_path={legacy / 'checkpoints/last.ckpt'}",
            "data.path=tiny.txt",
            "data.batch_size=4",
            "data.seq_len=16",
        ],
        output_dir=legacy.parent / "eval",
        name="eval",
    )
    result = evaluate(cfg)
    want = metrics_of(legacy)["test"]  # one epoch: the best checkpoint is the last
    for key in ("loss", "ppl", "bpc"):
        assert result[key] == pytest.approx(want[key], rel=1e-6)
