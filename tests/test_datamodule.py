from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from rnnlab.data.datamodule import LMDataModule, StreamBatches, batchify
from rnnlab.errors import UserError


def make_dm(path: Path, **kwargs) -> LMDataModule:
    dm = LMDataModule(path=str(path), **kwargs)
    dm.setup("fit")
    return dm


def test_token_counts_char_and_word(tmp_path: Path):
    path = tmp_path / "c.txt"
    path.write_text("".join(f"w{i % 10} x{i % 3}\n" for i in range(1000)))  # 6 chars a line
    char = make_dm(path, level="char", batch_size=4, seq_len=8)
    assert sum(char.num_tokens(s) for s in ("train", "val", "test")) == 6000
    assert char.num_tokens("train") == 5400
    word = make_dm(path, level="word", batch_size=4, seq_len=8)
    assert sum(word.num_tokens(s) for s in ("train", "val", "test")) == 3000  # 2 words + <eos>
    assert len(word.vocab) == 2 + 10 + 3


def test_batches_continue_row_by_row_and_only_the_tail_is_trimmed():
    ids = torch.arange(1000)
    data = batchify(ids, 4)  # 4 rows of 250
    batches = StreamBatches(data, seq_len=16, drop_last=True)
    assert len(batches) == (250 - 1) // 16 == 15
    inputs = torch.cat([batches[i][0] for i in range(len(batches))], dim=1)
    targets = torch.cat([batches[i][1] for i in range(len(batches))], dim=1)
    # row r of batch i+1 starts exactly where row r of batch i ended
    assert torch.equal(inputs, data[:, : 15 * 16])
    assert torch.equal(targets, inputs + 1)
    assert torch.equal(inputs[:, 0], torch.tensor([0, 250, 500, 750]))


def test_eval_batches_cover_every_column():
    data = batchify(torch.arange(1003), 4)  # 3 tokens of remainder dropped
    batches = StreamBatches(data, seq_len=16, drop_last=False)
    assert [batches[i][0].shape[1] for i in range(len(batches))][-1] == (250 - 1) % 16
    targets = torch.cat([batches[i][1] for i in range(len(batches))], dim=1)
    assert torch.equal(targets, data[:, 1:])


def test_train_loader_is_in_order_and_not_shuffled(tiny_corpus: Path):
    dm = make_dm(tiny_corpus, batch_size=4, seq_len=10)
    first = [x for x, _ in dm.train_dataloader()]
    second = [x for x, _ in dm.train_dataloader()]
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    assert torch.equal(torch.cat(first, 1), batchify(dm.ids["train"], 4)[:, : len(first) * 10])


def test_ddp_ranks_read_disjoint_contiguous_slices(tiny_corpus: Path):
    dm = make_dm(tiny_corpus, batch_size=2, seq_len=5)
    ids = dm.ids["train"]
    share = ids.numel() // 2
    for rank in (0, 1):
        dm.trainer = SimpleNamespace(global_rank=rank, world_size=2)
        stream = torch.cat([x for x, _ in dm.train_dataloader()], dim=1)
        expected = batchify(ids[rank * share : (rank + 1) * share], 2)
        assert torch.equal(stream, expected[:, : stream.shape[1]])


def test_too_short_corpus_says_how_many_tokens(tmp_path: Path):
    path = tmp_path / "short.txt"
    path.write_text("abcdefghij\n" * 10)  # 99 train chars
    with pytest.raises(
        UserError, match=r"train split .* has 99 tokens, but 32 rows of 65 need at least 2080"
    ):
        make_dm(path, batch_size=32, seq_len=64)


def test_empty_corpus(tmp_path: Path):
    path = tmp_path / "empty.txt"
    path.write_text("")
    with pytest.raises(UserError, match="empty"):
        make_dm(path)


@pytest.mark.parametrize("name", ["batch_size", "seq_len", "eval_batch_size"])
def test_sizes_below_one(name: str):
    with pytest.raises(UserError, match=f"data.{name} must be at least 1, got 0"):
        LMDataModule(**{name: 0})
