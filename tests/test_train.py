"""rnnlab-train end to end, what it writes, and every user mistake it refuses in one sentence."""

import dataclasses
import importlib.metadata
import json
import math
import os
import re
import sys
from pathlib import Path

import lightning
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

from rnnlab.cli.train import train
from rnnlab.data.vocab import Vocab
from rnnlab.nn.lm import ModelConfig, default_cutoffs
from tests.conftest import CONFIG_DIR, TINY_RUN, compose_train, one_sentence, run_cli


def assert_a_whole_run(run_dir: Path, backend: str) -> None:
    """What a finished run leaves: metrics.json, config.yaml, checkpoints, TensorBoard."""
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


def test_train_end_to_end_as_its_own_process(tiny_corpus: Path, tmp_path: Path):
    """The console entry point as a user runs it: exit status 0, the run's files, the report."""
    run_dir = tmp_path / "run"
    args = [f"data.path={tiny_corpus}", f"hydra.run.dir={run_dir}", *TINY_RUN]
    result = run_cli("train", *args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "final metrics" in result.stdout and "sample" in result.stdout
    assert_a_whole_run(run_dir, "builtin")


def test_train_end_to_end_on_the_custom_backend(cli, tiny_corpus: Path, tmp_path: Path):
    run_dir = tmp_path / "run"
    args = [f"data.path={tiny_corpus}", f"hydra.run.dir={run_dir}", "model.backend=custom"]
    result = cli("train", *args, *TINY_RUN)
    assert result.code == 0, result.err[-3000:]
    assert "final metrics" in result.out
    assert_a_whole_run(run_dir, "custom")


def test_the_run_record_names_every_model_setting(trained_run: Path):
    """metrics.json's hparams take their keys from ModelConfig, every setting resolved."""
    metrics = json.loads((trained_run / "metrics.json").read_text())
    model = ModelConfig(hidden_size=32).for_vocab(metrics["vocab_size"])
    recorded = {f.name: metrics["hparams"][f.name] for f in dataclasses.fields(ModelConfig)}
    assert recorded == dataclasses.asdict(model)
    assert recorded["embedding_dim"] == 32  # resolved: null means hidden_size
    assert {"level", "seq_len", "batch_size", "lr", "optimizer", "seed"} <= set(metrics["hparams"])


def test_the_run_record_says_where_the_run_ran(trained_run: Path):
    """metrics.json names the machine, so its times can be read against it."""
    machine = json.loads((trained_run / "metrics.json").read_text())["machine"]
    assert set(machine) == {"cpu", "cores", "torch_threads", "gpu", "torch", "lightning", "rnnlab"}
    assert machine["cores"] == os.cpu_count()
    assert machine["torch"] == torch.__version__
    assert machine["lightning"] == lightning.__version__
    assert machine["rnnlab"] == importlib.metadata.version("rnnlab")
    assert isinstance(machine["cpu"], str) and machine["cpu"]
    assert machine["torch_threads"] >= 1
    assert machine["gpu"] is None or isinstance(machine["gpu"], str)


def test_the_run_record_holds_the_memory_training_took(trained_run: Path):
    """Resident MB when training started and at its peak (tests/test_peak_memory.py)."""
    metrics = json.loads((trained_run / "metrics.json").read_text())
    if sys.platform.startswith("linux"):
        assert 0 < metrics["rss_start_mb"] <= metrics["peak_rss_mb"]
    else:
        assert metrics["rss_start_mb"] is None


def test_the_run_record_holds_the_val_curve(trained_run: Path):
    """One point per validation, in order, the last one the final val loss."""
    metrics = json.loads((trained_run / "metrics.json").read_text())
    curve = metrics["val_curve"]
    assert [p["epoch"] for p in curve] == list(range(metrics["epochs"]))
    assert all(a["step"] < b["step"] for a, b in zip(curve, curve[1:], strict=False))
    assert curve[-1]["loss"] == metrics["val"]["loss"]
    assert min(p["loss"] for p in curve) == metrics["best_val"]["loss"]


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
    "hidden_size abc": ({}, ["model.hidden_size=abc"], "model.hidden_size must be a whole number"),
    "dropout 1": ({}, ["model.dropout=1"], r"model.dropout must be in \[0, 1\), got 1"),
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
    "sparse with adam": (
        {},
        ["model.sparse_embedding=true"],
        r"sparse_embedding=true needs an optimizer that takes sparse gradients \(torch.optim.SGD "
        r"or Adagrad\), not Adam; set model.sparse_embedding=false",
    ),
    "sparse with weight decay": (
        {},
        [
            "model.sparse_embedding=true",
            "model.optimizer._target_=torch.optim.SGD",
            "model.optimizer.weight_decay=0.01",
        ],
        "model.sparse_embedding=true cannot be combined with weight decay",
    ),
    "allocator flag": ({}, ["keep_freed_memory=maybe"], "keep_freed_memory must be true or false"),
    "negative lr": ({}, ["model.optimizer.lr=-1"], "model.optimizer.lr must be above 0, got -1"),
    "negative decay": (
        {},
        ["model.optimizer.weight_decay=-0.1"],
        "model.optimizer.weight_decay must be at least 0, got -0.1",
    ),
    "budget shape": (
        {},
        ["model/scheduler=budget", "model.scheduler.shape=step"],
        "unknown model.scheduler.shape 'step'; use one of: linear, cosine",
    ),
    "budget hold": (
        {},
        ["model/scheduler=budget", "model.scheduler.hold=1"],
        r"model.scheduler.hold must be in \[0, 1\), got 1",
    ),
    "seed abc": ({}, ["seed=abc"], "seed must be a whole number, got 'abc'"),
    "negative clip": (
        {},
        ["trainer.gradient_clip_val=-1"],
        "trainer.gradient_clip_val must be at least 0, got -1",
    ),
    "max_steps -5": ({}, ["trainer.max_steps=-5"], "trainer.max_steps must be at least -1"),
    "max_time": ({}, ["trainer.max_time=ten"], "trainer.max_time must be DD:HH:MM:SS"),
    "limit 1.5": (
        {},
        ["trainer.limit_train_batches=1.5"],
        r"trainer.limit_train_batches must be a number of batches .* or a fraction",
    ),
    "torch_threads 0": ({}, ["torch_threads=0"], "torch_threads must be at least 1"),
    "no gpu": ({}, ["trainer=gpu"], "trainer.accelerator=gpu but this machine has no GPU"),
    "every 0 steps": (
        {},
        ["checkpoint.every_n_train_steps=0"],
        "checkpoint.every_n_train_steps must be at least 1",
    ),
    "optimized_metric": (
        {},
        ["optimized_metric=ppl"],
        "optimized_metric must be <split>/<metric> with split one of val, best_val, test",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_is_one_sentence_and_exit_1(
    case: str, cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    if case == "no gpu" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    files, overrides, message = BAD_INPUT[case]
    for name, data in files.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(data)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")  # a download is refused at once
    args = [o.format(tmp=tmp_path) for o in overrides]
    sentence = one_sentence(cli("train", *args, f"hydra.run.dir={tmp_path / 'run'}"))
    assert re.search(message, sentence), sentence


def test_a_bad_setting_is_refused_before_the_corpus_is_read(cli, tmp_path: Path, monkeypatch):
    """The config is checked once, where it is composed: nothing is tokenized or built."""
    monkeypatch.chdir(tmp_path)
    result = cli("train", "seed=abc", f"hydra.run.dir={tmp_path / 'run'}")
    one_sentence(result)
    assert not (tmp_path / "data").exists()  # no token cache: the corpus was never read
    assert (tmp_path / "run/config.yaml").is_file()  # what was asked, kept for the record


def test_every_stopping_limit_lightning_has_is_in_the_trainer_config():
    text = (CONFIG_DIR / "trainer/default.yaml").read_text()
    for key in ("max_epochs", "max_steps", "max_time", "min_epochs", "min_steps"):
        assert re.search(rf"^{key}: ", text, re.M), key


def test_max_steps_stops_a_run(tiny_corpus: Path, tmp_path: Path):
    cfg = compose_train(
        [f"data.path={tiny_corpus}", *TINY_RUN, "trainer.max_steps=7", "logger=csv"],
        output_dir=tmp_path,
    )
    metrics = train(cfg)
    assert (metrics["steps"], metrics["train_tokens"]) == (7, 7 * 4 * 16)


def test_training_without_validation(tiny_corpus: Path, tmp_path: Path, capsys):
    """limit_val_batches=0: early stopping and the best checkpoint step aside, one line says
    so; last.ckpt is still written at each epoch end and the test runs on the last weights."""
    cfg = compose_train(
        [f"data.path={tiny_corpus}", *TINY_RUN, "trainer.limit_val_batches=0"], output_dir=tmp_path
    )
    metrics = train(cfg)
    out = capsys.readouterr().out
    (line,) = [x for x in out.splitlines() if "no validation" in x]
    assert "early stopping and the best checkpoint step aside" in line
    assert metrics["val"] == {} and metrics["best_val"] == {}
    assert math.isfinite(metrics["test"]["loss"]) and metrics["steps"] == 60
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["last.ckpt"]
    assert torch.load(tmp_path / "checkpoints/last.ckpt", weights_only=True)["global_step"] == 60


def test_callbacks_none_keeps_checkpoints_and_safety(tiny_corpus: Path, tmp_path: Path):
    """callbacks= picks what a run shows; checkpoints, throughput and the NaN guard stay."""
    cfg = compose_train(
        [f"data.path={tiny_corpus}", *TINY_RUN, "callbacks=none", "logger=csv"], output_dir=tmp_path
    )
    metrics = train(cfg)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names[0].startswith("best-") and names[1] == "last.ckpt"
    assert metrics["train_tokens"] == 2 * 30 * 4 * 16 and metrics["tokens_per_sec"] > 0


def test_resume_continues_from_a_checkpoint_file(trained_run: Path, tmp_path: Path):
    """Lightning's own resume (ckpt_path=) in a new run: the count goes on from the checkpoint."""
    last = trained_run / "checkpoints/last.ckpt"
    args = [f"data.path={trained_run.parent / 'tiny.txt'}", *TINY_RUN, f"ckpt_path={last}"]
    cfg = compose_train([*args, "trainer.max_epochs=3", "logger=csv"], output_dir=tmp_path)
    metrics = train(cfg)
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
def test_resume_mistakes_are_one_sentence(
    cli, trained_run: Path, tmp_path: Path, overrides, message
):
    args = [f"data.path={trained_run.parent / 'tiny.txt'}", *TINY_RUN]
    args += [f"ckpt_path={trained_run / 'checkpoints/last.ckpt'}", *overrides]
    sentence = one_sentence(cli("train", *args, f"hydra.run.dir={tmp_path / 'run'}"))
    assert re.search(message, sentence), sentence


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
    assert metrics["hparams"]["cutoffs"] == default_cutoffs(metrics["vocab_size"])
    checkpoint = torch.load(tmp_path / "checkpoints/last.ckpt", weights_only=True)
    assert checkpoint["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(3e-3 / 4)


def test_output_auto_says_what_it_chose_and_records_it(
    tiny_corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    """A small vocabulary gets the full softmax: printed before training, in the record."""
    cfg = compose_train(
        [f"data.path={tiny_corpus}", *TINY_RUN, "model.output=auto", "trainer.max_epochs=1"],
        output_dir=tmp_path,
    )
    metrics = train(cfg)
    vocab_size = metrics["vocab_size"]
    assert (
        f"model.output=auto: the full softmax for {vocab_size:,} types" in capsys.readouterr().out
    )
    assert (metrics["hparams"]["output"], metrics["hparams"]["cutoffs"]) == ("softmax", None)
