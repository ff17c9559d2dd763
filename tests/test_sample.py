"""rnnlab-sample: everything from the checkpoint, deterministic by seed, clear about bad prompts."""

import re
import shutil
from pathlib import Path

import pytest
import torch

from rnnlab.cli.sample import samples
from rnnlab.errors import UserError
from tests.conftest import compose_train, one_sentence, run_cli


def sample_cfg(run_dir: Path, *overrides: str):
    ckpt = run_dir / "checkpoints/last.ckpt"
    return compose_train([f"ckpt_path={ckpt}", "num_tokens=60", *overrides], name="sample")


def test_same_seed_same_text_and_each_sample_its_own_seed(trained_run: Path):
    first = samples(sample_cfg(trained_run, "prompt=line", "num_samples=2", "seed=5"))
    again = samples(sample_cfg(trained_run, "prompt=line", "seed=6"))
    assert len(first) == 2 and all(text.startswith("line") for text in first)
    assert all(len(text) == len("line") + 60 for text in first)
    assert first[0] != first[1]
    assert again == [first[1]]


def test_greedy_text_is_the_same_on_both_backends(trained_run: Path):
    builtin = samples(sample_cfg(trained_run, "greedy=true"))
    custom = samples(sample_cfg(trained_run, "greedy=true", "backend=custom"))
    assert builtin == custom


def test_unknown_prompt_characters_are_named_or_mapped(trained_run: Path):
    with pytest.raises(UserError, match=r"3 token\(s\) the model never saw: 'Z' 'é' '€'"):
        samples(sample_cfg(trained_run, "prompt='Zé€ the'"))
    (text,) = samples(sample_cfg(trained_run, "prompt='Zé€ the'", "unknown=unk"))
    assert text.startswith("Zé€ the")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["temperature=0"], "temperature must be above 0"),
        (["top_k=-3"], "top_k must be at least 1, got -3"),
        (["num_tokens=-1"], "num_tokens must be at least 0"),
        (["seed=abc"], "seed must be a whole number, got 'abc'"),
        (["unknown=drop"], "unknown='drop' is not a choice"),
        (["backend=cudnn"], "backend='cudnn' is not a choice; use one of: builtin, custom"),
        (["device=tpu"], "device='tpu' is not a choice; use one of: cpu, gpu, auto"),
        (["ckpt_path={tmp}/none.ckpt"], r"checkpoint .*none.ckpt does not exist"),
        (["ckpt_path={tmp}/cut.ckpt"], r"cut.ckpt is not a readable checkpoint"),
        (["ckpt_path={tmp}/other.ckpt"], r"other.ckpt is not an rnnlab checkpoint"),
    ],
)
def test_mistakes_are_one_sentence(cli, trained_run: Path, tmp_path: Path, overrides, message):
    data = (trained_run / "checkpoints/last.ckpt").read_bytes()
    (tmp_path / "cut.ckpt").write_bytes(data[: len(data) // 2])  # a truncated checkpoint
    shutil.copy(trained_run / "checkpoints/last.ckpt", tmp_path / "whole.ckpt")
    torch.save({"state_dict": {}}, tmp_path / "other.ckpt")
    args = [f"ckpt_path={tmp_path / 'whole.ckpt'}"] + [o.format(tmp=tmp_path) for o in overrides]
    sentence = one_sentence(cli("sample", *args, f"hydra.run.dir={tmp_path / 'run'}"))
    assert re.search(message, sentence), sentence
    assert (tmp_path / "whole.ckpt").read_bytes() == data  # nothing written is touched


def test_sample_as_its_own_process(trained_run: Path, tmp_path: Path):
    """The console entry point: samples printed with their seeds, a mistake one sentence."""
    ckpt = trained_run / "checkpoints/last.ckpt"
    args = [f"ckpt_path={ckpt}", "prompt=line", "num_tokens=30", "num_samples=2", "seed=4"]
    result = run_cli("sample", *args, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "sample 1 (seed 4)" in result.stdout and "sample 2 (seed 5)" in result.stdout
    assert "line" in result.stdout
