"""rnnlab-eval: a checkpoint's numbers on any corpus, with its own vocabulary."""

import json
import re
from pathlib import Path

import pytest
import torch

from rnnlab.cli.evaluate import evaluate
from tests.conftest import TINY_RUN, TINY_TEXT, compose_train, one_sentence, run_cli

DATA = [o for o in TINY_RUN if o.startswith("data.")]


def best_checkpoint(run_dir: Path) -> Path:
    (best,) = (run_dir / "checkpoints").glob("best-*.ckpt")
    return best


@pytest.mark.parametrize("backend", ["builtin", "custom"])
def test_own_test_split_reproduces_metrics_json(trained_run: Path, backend: str, tmp_path: Path):
    cfg = compose_train(
        [
            f"ckpt_path={best_checkpoint(trained_run)}",
            f"backend={backend}",
            f"data.path={trained_run.parent / 'tiny.txt'}",
            *DATA,
        ],
        output_dir=tmp_path,
        name="eval",
    )
    result = evaluate(cfg)
    expected = json.loads((trained_run / "metrics.json").read_text())["test"]
    for key in ("loss", "ppl", "bpc"):
        assert result[key] == pytest.approx(expected[key], rel=1e-6)
    assert result["unknown_tokens"] == 0 and result["backend"] == backend


def test_other_corpus_counts_tokens_outside_the_vocabulary(trained_run: Path, tmp_path: Path):
    for name in ("train.txt", "valid.txt"):
        (tmp_path / name).write_text(TINY_TEXT)
    (tmp_path / "test.txt").write_text("the fox Zé\n" * 100)  # Z and é were never seen
    cfg = compose_train(
        [f"ckpt_path={best_checkpoint(trained_run)}", f"data.path={tmp_path}", *DATA],
        output_dir=tmp_path / "out",
        name="eval",
    )
    result = evaluate(cfg)
    assert result["tokens"] == 1100 and result["unknown_tokens"] == 200
    assert result["ppl"] > 1


def test_eval_as_its_own_process_writes_metrics_json(trained_run: Path, tmp_path: Path):
    args = [
        f"ckpt_path={trained_run / 'checkpoints/last.ckpt'}",
        "split=val",
        f"data.path={trained_run.parent / 'tiny.txt'}",
        *DATA,
    ]
    result = run_cli("evaluate", *args, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    written = json.loads((tmp_path / "run/metrics.json").read_text())
    assert written["split"] == "val" and written["bpc"] > 0 and "unknown_tokens" in result.stdout


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["split=train"], "split='train' is not a choice; use one of: val, test"),
        (["device=tpu"], "device='tpu' is not a choice; use one of: cpu, gpu, auto"),
        (["data.batch_size=0"], "data.batch_size must be at least 1, got 0"),
        (["device=gpu"], "device=gpu but this machine has no GPU; use device=cpu"),
    ],
)
def test_mistakes_are_one_sentence(cli, trained_run: Path, tmp_path: Path, overrides, message):
    if overrides == ["device=gpu"] and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    args = [f"ckpt_path={trained_run / 'checkpoints/last.ckpt'}", *overrides]
    sentence = one_sentence(cli("evaluate", *args, f"hydra.run.dir={tmp_path / 'run'}"))
    assert re.search(message, sentence), sentence
