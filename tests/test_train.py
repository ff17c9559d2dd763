"""The Hydra entry point end to end, and every user mistake it must refuse in one sentence."""

import json
import math
import re
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

from rnnlab.data.vocab import Vocab
from rnnlab.train import train
from tests.conftest import TINY_RUN, compose_train, run_cli


@pytest.mark.parametrize("backend", ["builtin", "custom"])
def test_train_end_to_end(backend: str, tiny_corpus: Path, tmp_path: Path):
    run_dir = tmp_path / "run"
    result = run_cli(
        "train",
        f"data.path={tiny_corpus}",
        f"hydra.run.dir={run_dir}",
        f"model.backend={backend}",
        *TINY_RUN,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "final metrics" in result.stdout and "sample" in result.stdout

    metrics = json.loads((run_dir / "metrics.json").read_text())
    for split in ("val", "best_val", "test"):
        assert set(metrics[split]) == {"loss", "ppl", "bpc"}
        assert all(math.isfinite(v) for v in metrics[split].values())
        assert metrics[split]["ppl"] == pytest.approx(math.exp(metrics[split]["loss"]), rel=1e-6)
    assert metrics["best_val"]["loss"] <= metrics["val"]["loss"]
    assert metrics["train_tokens"] == 2 * 30 * 4 * 16
    assert metrics["tokens_per_sec"] > 0 and metrics["num_params"] > 0
    assert metrics["hparams"]["backend"] == backend and metrics["hparams"]["hidden_size"] == 32

    assert "hidden_size: 32" in (run_dir / "config.yaml").read_text()
    checkpoint = torch.load(run_dir / "checkpoints/last.ckpt", weights_only=True)
    assert checkpoint["hyper_parameters"]["backend"] == backend
    vocab = Vocab.from_dict(checkpoint["hyper_parameters"]["vocab"])
    assert vocab.level == "char" and len(vocab) > 20

    accumulator = EventAccumulator(str(run_dir / "tensorboard"), {"tensors": 0, "scalars": 0})
    accumulator.Reload()
    scalars = set(accumulator.Tags()["scalars"])
    assert {"train/loss", "val/loss", "val/ppl", "val/bpc", "train/tokens_per_sec"} <= scalars
    assert any(tag.startswith("lr-") for tag in scalars)
    assert len(accumulator.Scalars("val/ppl")) == 2
    assert "sample/text_summary" in accumulator.Tags()["tensors"]
    hparams = HParamsPluginData.FromString(
        accumulator.PluginTagToContent("hparams")["_hparams_/experiment"]
    ).experiment
    assert "hp/val_ppl" in {m.name.tag for m in hparams.metric_infos}
    assert {"backend", "hidden_size", "seq_len", "lr"} <= {h.name for h in hparams.hparam_infos}


SHORT = b"hello there\n" * 20
LATIN1 = "café au lait".encode("latin-1") * 500
# case: (files the test writes, overrides with {tmp} for its directory, the sentence expected)
BAD_INPUT = {
    "missing path": ({}, ["data.path=/no/such/corpus.txt"], "does not exist"),
    "empty corpus": ({"e.txt": b""}, ["data.path={tmp}/e.txt"], "is empty"),
    "too short": ({"s.txt": SHORT}, ["data.path={tmp}/s.txt"], "need at least 2080"),
    "not utf-8": (
        {"l.txt": LATIN1},
        ["data.path={tmp}/l.txt"],
        r"l.txt is not UTF-8 text \(invalid byte at offset 3\)",
    ),
    "seq_len 0": ({}, ["data.seq_len=0"], "data.seq_len must be at least 1, got 0"),
    "batch_size 0": ({}, ["data.batch_size=0"], "data.batch_size must be at least 1"),
    "hidden_size 0": ({}, ["model.hidden_size=0"], "model.hidden_size must be at least 1"),
    "unknown backend": ({}, ["model.backend=cudnn"], "unknown model.backend 'cudnn'"),
    "bad cutoffs": (
        {},
        ["model.output=adaptive", "model.cutoffs=[50,20]"],
        r"model.cutoffs must be increasing integers between 1 and \d+",
    ),
    "unknown level": ({}, ["data.level=byte"], "unknown tokenization level 'byte'"),
    "directory without a train file": (
        {"d/valid.txt": SHORT, "d/test.txt": SHORT},
        ["data.path={tmp}/d"],
        r"corpus directory \S+/d has no train file; expected one of: train.txt",
    ),
    "corrupt checkpoint": (
        {"x.ckpt": b"PK\x03\x04 not really a checkpoint"},
        ["ckpt_path={tmp}/x.ckpt"],
        r"x.ckpt is not a readable checkpoint \(\w+\); it may be truncated",
    ),
    "preset offline": (
        {},
        ["data=shakespeare_char", "paths.data_dir={tmp}/data"],
        "if offline, pass a local copy with data.path=",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_is_one_sentence_and_exit_1(case: str, tmp_path: Path):
    files, overrides, message = BAD_INPUT[case]
    for name, data in files.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(data)
    result = run_cli(
        "train",
        *(o.format(tmp=tmp_path) for o in overrides),
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
        env={"https_proxy": "http://127.0.0.1:9"},  # a download is refused at once: offline
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr + result.stdout
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("error: ")
    assert re.search(message, last_line), last_line


def test_resume_continues_from_the_checkpoint(trained_run: Path, tmp_path: Path):
    corpus = trained_run.parent / "tiny.txt"
    last = trained_run / "checkpoints/last.ckpt"
    args = [f"data.path={corpus}", *TINY_RUN, "trainer.max_epochs=3", f"ckpt_path={last}"]
    result = run_cli("train", *args, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "run/metrics.json").read_text())
    # one more epoch; the token count goes on from the checkpoint's
    assert metrics["steps"] == 3 * 30 and metrics["train_tokens"] == 3 * 30 * 4 * 16


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["data.level=word"],
            r"char-level vocabulary of \d+ tokens, but this data gives a word-level",
        ),
        (["ckpt_path=/no/such.ckpt"], r"checkpoint /no/such.ckpt does not exist"),
    ],
)
def test_resume_mistakes_are_one_sentence(trained_run: Path, tmp_path: Path, overrides, message):
    args = [f"data.path={trained_run.parent / 'tiny.txt'}", *TINY_RUN]
    args += [f"ckpt_path={trained_run / 'checkpoints/last.ckpt'}", *overrides]
    result = run_cli("train", *args, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    assert re.search(message, result.stderr.strip().splitlines()[-1]), result.stderr[-500:]


def test_word_level_adaptive_run_with_a_90_10_split(tiny_corpus: Path, tmp_path: Path):
    """No test text (data.split's last fraction is 0): the run trains, validates, skips test;
    the halving schedule leaves lr / 2**epochs."""
    cfg = compose_train(
        [
            f"data.path={tiny_corpus}",
            "data.level=word",
            "data.split=[0.9,0.1,0.0]",
            "data.batch_size=2",
            "data.seq_len=8",
            "data.eval_batch_size=2",
            "model.output=adaptive",
            "model/scheduler=halving",
            "model.hidden_size=16",
            "model.sample_tokens=5",
            "trainer.max_epochs=2",
            "logger=csv",
        ],
        output_dir=tmp_path,
    )
    metrics = train(cfg)
    assert metrics["test"] == {} and math.isfinite(metrics["val"]["loss"])
    assert metrics["hparams"]["output"] == "adaptive"
    checkpoint = torch.load(tmp_path / "checkpoints/last.ckpt", weights_only=True)
    assert checkpoint["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(3e-3 / 4)
