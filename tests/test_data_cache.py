"""The token cache: a second run opens memory-mapped ids instead of tokenizing again."""

import multiprocessing
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from rnnlab.data import cache
from rnnlab.data.cache import Recipe, load_tokens
from rnnlab.data.corpus import open_corpus
from rnnlab.data.datamodule import LMDataModule
from rnnlab.data.textfile import TextFile
from rnnlab.data.vocab import Vocab
from rnnlab.errors import UserError

SPLIT = (0.9, 0.05, 0.05)


@pytest.fixture
def corpus_path(tmp_path: Path) -> Path:
    path = tmp_path / "c.txt"
    path.write_text("".join(f"w{i % 10} x{i % 3} é\n" for i in range(1000)))  # 8 chars a line
    return path


def setup_dm(path: Path, cache_dir: Path | None, **kwargs) -> LMDataModule:
    dm = LMDataModule(path=str(path), batch_size=4, seq_len=8, cache_dir=cache_dir, **kwargs)
    dm.setup()
    return dm


def forbid_tokenizing(monkeypatch) -> None:
    def fail(*args, **kwargs):
        raise AssertionError("tokenized although the cache holds the ids")

    monkeypatch.setattr(Vocab, "from_chunks", fail)
    monkeypatch.setattr(Vocab, "encode_chunks", fail)
    monkeypatch.setattr(TextFile, "blocks", property(fail))  # not even decoded: hashed only


def entries(cache_dir: Path) -> list[Path]:
    return sorted(p for p in cache_dir.iterdir() if (p / "meta.json").is_file())


@pytest.mark.parametrize("level", ["char", "word"])
def test_second_setup_maps_the_cached_ids_without_tokenizing(
    corpus_path: Path, tmp_path: Path, monkeypatch, level: str
):
    first = setup_dm(corpus_path, tmp_path / "cache", level=level)
    uncached = setup_dm(corpus_path, None, level=level)
    forbid_tokenizing(monkeypatch)
    second = setup_dm(corpus_path, tmp_path / "cache", level=level)
    assert second.vocab == first.vocab == uncached.vocab
    for split in ("train", "val", "test"):
        assert isinstance(second.ids[split], np.memmap) and second.ids[split].dtype == np.uint8
        assert second.ids[split].tolist() == uncached.ids[split].tolist()
    assert second.unknown == first.unknown
    assert sum(second.num_tokens(s) for s in ("train", "val", "test")) == (
        8000 if level == "char" else 4000
    )
    assert len(entries(tmp_path / "cache")) == 1


def test_batches_from_the_map_are_int64_without_warnings(corpus_path: Path, tmp_path: Path):
    setup_dm(corpus_path, tmp_path / "cache")
    dm = setup_dm(corpus_path, tmp_path / "cache")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns on a non-writable NumPy array
        inputs, targets = next(iter(dm.train_dataloader()))
    assert inputs.dtype == targets.dtype == torch.int64 and inputs.shape == (4, 8)
    assert torch.equal(inputs[:, 1:], targets[:, :-1])


def test_every_setting_that_changes_the_ids_has_its_own_entry(corpus_path: Path, tmp_path: Path):
    store = tmp_path / "cache"
    base = setup_dm(corpus_path, store, level="word")
    setup_dm(corpus_path, store, level="char")
    setup_dm(corpus_path, store, level="word", min_freq=400)
    setup_dm(corpus_path, store, level="word", max_size=5)
    setup_dm(corpus_path, store, level="word", split=[0.8, 0.1, 0.1])
    given = LMDataModule(path=str(corpus_path), level="word", batch_size=4, seq_len=8)
    given.vocab, given.cache_dir = Vocab.build("w1 w2\n", "word"), store
    given.setup()
    assert given.unknown["train"] == 3600 - 900 - 2 * 90  # all but <eos>, w1 and w2
    assert len(entries(store)) == 6
    corpus_path.write_text(corpus_path.read_text().replace("w1 ", "w11 "))  # the content
    changed = setup_dm(corpus_path, store, level="word")
    assert len(entries(store)) == 7 and "w11" in changed.vocab.stoi
    assert "w1" in base.vocab.stoi


def test_an_unreadable_entry_is_built_again(corpus_path: Path, tmp_path: Path, caplog):
    store = tmp_path / "cache"
    expected = setup_dm(corpus_path, store).ids["train"].tolist()
    (entry,) = entries(store)
    for damage in (
        lambda: (entry / "train.npy").write_bytes(b"\x93NUMPY garbage"),
        lambda: (entry / "meta.json").write_text("{"),
        lambda: (entry / "val.npy").write_bytes((entry / "val.npy").read_bytes()[:-10]),
    ):
        damage()
        assert setup_dm(corpus_path, store).ids["train"].tolist() == expected
    assert caplog.text.count("is unreadable") == 3


def test_a_run_killed_while_writing_leaves_no_entry_that_loads(
    corpus_path: Path, tmp_path: Path, monkeypatch
):
    store = tmp_path / "cache"
    real_write_ids, written = cache.write_ids, []

    def killed_at_the_second_split(file, chunks, vocab):
        if written:
            raise KeyboardInterrupt
        written.append(real_write_ids(file, chunks, vocab))
        return written[-1]

    monkeypatch.setattr(cache, "write_ids", killed_at_the_second_split)
    with pytest.raises(KeyboardInterrupt):
        setup_dm(corpus_path, store)
    (entry,) = store.iterdir()
    assert sorted(p.name for p in entry.iterdir()) == ["train.npy"]  # no meta.json, no temp file
    monkeypatch.setattr(cache, "write_ids", real_write_ids)
    assert setup_dm(corpus_path, store).num_tokens("val") == 400


def write_and_check(corpus_path: Path, store: Path) -> None:
    tokens = load_tokens(open_corpus(path=corpus_path), Recipe("char", 1, None, SPLIT), store)
    assert len(tokens.ids["train"]) == 7200


def test_concurrent_writers_of_one_entry_agree(corpus_path: Path, tmp_path: Path):
    """DDP ranks all call setup: each writes the entry, whole files replacing whole files."""
    processes = [
        multiprocessing.get_context("fork").Process(
            target=write_and_check, args=(corpus_path, tmp_path)
        )
        for _ in range(3)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    assert [p.exitcode for p in processes] == [0, 0, 0]
    (entry,) = entries(tmp_path)
    assert sorted(p.name for p in entry.iterdir()) == [
        "meta.json",
        "test.npy",
        "train.npy",
        "val.npy",
    ]


def test_an_unwritable_cache_dir_says_what_to_do(corpus_path: Path, tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(UserError, match="could not write the token cache .*data.cache_dir=null"):
        setup_dm(corpus_path, blocker / "cache")
