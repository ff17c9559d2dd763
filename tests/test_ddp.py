"""trainer=ddp on CPU: two processes (gloo), each reading its own rows of the stream."""

import json
from pathlib import Path

import pytest
import torch.distributed

from rnnlab.cli.evaluate import evaluate
from tests.conftest import TINY_RUN, TINY_TEXT, compose_train, run_cli

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available(), reason="needs torch.distributed (gloo)"
)


@pytest.mark.parametrize(("cell", "backend"), [("rnn", "builtin"), ("lstm", "custom")])
def test_ddp_trains_validates_and_matches_a_single_process_evaluation(
    cell: str, backend: str, tmp_path: Path
):
    """The LSTM's carried pair and the hand-written backward go through DDP like the rest."""
    (tmp_path / "tiny.txt").write_text(TINY_TEXT, encoding="utf-8")
    run = tmp_path / "run"
    data = [f"data.path={tmp_path / 'tiny.txt'}"]
    small = [o for o in TINY_RUN if "limit_train_batches" not in o]
    result = run_cli(
        "train",
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        f"model.cell={cell}",
        f"model.backend={backend}",
        *data,
        *small,
        f"hydra.run.dir={run}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["world_size"] == 2
    # 2 ranks x 4 rows: one process would see 8 rows of 16 tokens per step
    assert metrics["train_tokens"] == metrics["steps"] * 2 * 4 * 16

    # only rank 0 writes: one TensorBoard run, one metrics.json, one config.yaml
    assert len(list(run.rglob("metrics.json"))) == 1
    assert sorted(p.name for p in run.iterdir() if p.is_dir()) == [
        ".hydra",
        "checkpoints",
        "tensorboard",
    ]
    assert not list(run.glob("tensorboard/version_*"))

    # the val loss DDP logged (reduced over both ranks) is what one process measures with
    # the same checkpoint on 2 x 4 rows
    (best,) = run.glob("checkpoints/best-*.ckpt")
    overrides = [f"ckpt_path={best}", *data, "data.batch_size=8", "split=val"]
    single = evaluate(compose_train(overrides, output_dir=tmp_path / "eval", name="eval"))
    assert single["loss"] == pytest.approx(metrics["best_val"]["loss"], rel=1e-6)
