"""The peak-memory figures of metrics.json: a run's own peak, not its process's."""

from __future__ import annotations

import mmap
import sys

import pytest

from rnnlab.training.peak_memory import peak_memory_mb, reset_peak_memory, status_mb

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self")


@linux
def test_the_peak_counts_what_training_holds_and_resets_for_the_next_run():
    start = reset_peak_memory()
    assert start is not None and start > 0
    block = mmap.mmap(-1, 32 * 2**20)  # 32 MB of new pages (freed heap could be reused)
    block.write(b"x" * len(block))  # touched, so resident
    held = peak_memory_mb()
    block.close()
    assert held is not None and held - start >= 30
    again = reset_peak_memory()  # the next run in this process starts from now, not from held
    assert again is not None and peak_memory_mb() == pytest.approx(again, abs=2)
    assert again < held - 25


def test_no_such_field_is_none():
    assert status_mb("NoSuchField") is None
