"""keep_freed_memory: a step's large tensors reuse freed heap memory instead of new pages."""

import platform
import resource
from pathlib import Path

import pytest
import torch

from rnnlab.cli import train as train_cli
from rnnlab.cli.allocator import keep_freed_memory
from tests.conftest import TINY_RUN, compose_train

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
#: above the 32 MB that glibc's adaptive mmap threshold can reach by itself
BLOCK_FLOATS = 16 << 20  # 64 MB
PAGES = BLOCK_FLOATS * 4 // resource.getpagesize()


def faults_per_block(blocks: int = 4, warmup: int = 16) -> float:
    """Minor page faults per 64 MB tensor allocated, written and freed, once the heap has
    grown to hold one (glibc takes a few rounds to settle)."""
    for _ in range(warmup):
        torch.ones(BLOCK_FLOATS)
    start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(blocks):
        torch.ones(BLOCK_FLOATS)
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start) / blocks


@pytest.mark.skipif(not GLIBC, reason="the settings are glibc's")
def test_freed_blocks_are_reused_without_new_page_faults():
    """glibc's default would map, fault in and unmap all 16,384 pages of each block."""
    assert keep_freed_memory()
    assert faults_per_block() < PAGES / 20


@pytest.mark.parametrize("setting", [True, False])
def test_train_sets_the_allocator_as_configured(
    setting: bool, tiny_corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    calls = []
    monkeypatch.setattr(train_cli, "keep_freed_memory", lambda: calls.append(True))
    overrides = [f"data.path={tiny_corpus}", *TINY_RUN, "trainer.max_steps=2", "logger=csv"]
    cfg = compose_train([*overrides, f"keep_freed_memory={setting}"], output_dir=tmp_path)
    train_cli.train(cfg)
    assert calls == ([True] if setting else [])
