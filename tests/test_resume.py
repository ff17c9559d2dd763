"""Resume in place and exactly; checkpoints that survive kills; Ctrl-C; a non-finite loss."""

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rnnlab.checkpointing import AtomicCheckpointIO
from tests.conftest import TINY_RUN, TINY_TEXT, run_cli

REPO = Path(__file__).resolve().parents[1]
#: dropout draws from the global RNG every step, so a resume must restore it too
RUN = (
    *TINY_RUN,
    "trainer.max_epochs=3",
    "model.dropout=0.3",
    "trainer.deterministic=true",
    "callbacks.periodic_checkpoint.every_n_train_steps=7",
)


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """rnnlab-train, with tests/signals.py importable by the runs that use it."""
    return run_cli("train", *args, cwd=cwd, env={"PYTHONPATH": str(REPO)})


def train(root: Path, name: str, *overrides: str) -> subprocess.CompletedProcess[str]:
    return cli(
        f"data.path={root / 'tiny.txt'}", *RUN, f"hydra.run.dir={root / name}", *overrides, cwd=root
    )


def signal_at(step: int, name: str) -> list[str]:
    prefix = "+callbacks.signal"
    return [
        f"{prefix}._target_=tests.signals.SignalAtStep",
        f"{prefix}.step={step}",
        f"{prefix}.signal={name}",
    ]


def checkpoint_step(path: Path) -> int:
    return torch.load(path, weights_only=True)["global_step"]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("resume")
    (root / "tiny.txt").write_text(TINY_TEXT, encoding="utf-8")
    result = train(root, "whole")
    assert result.returncode == 0, result.stderr[-3000:]
    return root


def assert_same_run(resumed: Path, whole: Path) -> None:
    got, want = (json.loads((d / "metrics.json").read_text()) for d in (resumed, whole))
    for split in ("val", "best_val", "test"):
        assert got[split]["loss"] == pytest.approx(want[split]["loss"], rel=1e-5), split
    assert (got["steps"], got["train_tokens"]) == (want["steps"], want["train_tokens"])


def test_sigkill_mid_step_then_resume_ends_like_an_uninterrupted_run(root: Path):
    killed = train(root, "killed", *signal_at(40, "SIGKILL"))
    assert killed.returncode == -9
    last = root / "killed/checkpoints/last.ckpt"
    assert checkpoint_step(last) == 35  # mid-epoch 2 (steps 30-59), 5 steps lost
    assert not (root / "killed/metrics.json").exists()

    resumed = cli(f"resume={root / 'killed'}", cwd=root)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_run(root / "killed", root / "whole")
    # in place: the same TensorBoard run and checkpoints, Hydra's first record kept
    assert (root / "killed/.hydra/overrides.yaml").read_text().count("SignalAtStep") == 1
    assert len(list((root / "killed/.hydra").glob("resumed-*"))) == 1
    assert sorted(p.name for p in (root / "killed").iterdir() if p.is_dir()) == [
        ".hydra",
        "checkpoints",
        "tensorboard",
    ]


def test_ctrl_c_saves_after_the_batch_and_says_how_to_resume(root: Path):
    stopped = train(root, "stopped", *signal_at(12, "SIGINT"))
    assert stopped.returncode == 1
    assert "Traceback" not in stopped.stdout + stopped.stderr
    assert f"resume with:  rnnlab-train resume={root / 'stopped'}" in stopped.stdout
    assert checkpoint_step(root / "stopped/checkpoints/last.ckpt") == 13  # step 12 finished

    resumed = cli(f"resume={root / 'stopped'}", "trainer.max_epochs=3", cwd=root)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_run(root / "stopped", root / "whole")


@pytest.mark.parametrize(
    ("make", "overrides", "message"),
    [
        ("nothing", [], r"resume=\S+ is not a run to resume: it needs config.yaml"),
        ("run", ["model.hidden_size=64"], r"only trainer.max_epochs, .* not model.hidden_size"),
    ],
)
def test_resume_mistakes_are_one_sentence(root: Path, tmp_path: Path, make, overrides, message):
    target = root / "whole" if make == "run" else tmp_path
    result = cli(f"resume={target}", *overrides, cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("error: ")]
    assert re.search(message, line), line


def test_a_non_finite_loss_stops_naming_the_step_and_keeps_good_checkpoints(root: Path):
    result = train(
        root,
        "diverged",
        "model.optimizer._target_=torch.optim.SGD",
        "model.optimizer.lr=1e38",
        "trainer.gradient_clip_val=null",
        "callbacks.periodic_checkpoint.every_n_train_steps=1",
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    line = result.stderr.strip().splitlines()[-1]
    pattern = r"error: training stopped: the loss became NaN or infinite after step (\d+) .*"
    found = re.fullmatch(pattern, line)
    assert found, line
    last = torch.load(root / "diverged/checkpoints/last.ckpt", weights_only=True)
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
            "from rnnlab.checkpointing import AtomicCheckpointIO\n"
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
