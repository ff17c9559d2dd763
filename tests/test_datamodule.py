from pathlib import Path
from types import SimpleNamespace

import numpy as np
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
    data = batchify(np.arange(1000, dtype=np.uint16), 4)  # 4 rows of 250
    batches = StreamBatches(data, seq_len=16, drop_last=True)
    assert len(batches) == (250 - 1) // 16 == 15
    inputs = torch.cat([batches[i][0] for i in range(len(batches))], dim=1)
    targets = torch.cat([batches[i][1] for i in range(len(batches))], dim=1)
    assert inputs.dtype == torch.int64  # what nn.Embedding and cross_entropy take
    # row r of batch i+1 starts exactly where row r of batch i ended
    assert torch.equal(inputs, torch.from_numpy(data[:, : 15 * 16].astype(np.int64)))
    assert torch.equal(targets, inputs + 1)
    assert torch.equal(inputs[:, 0], torch.tensor([0, 250, 500, 750]))


def test_eval_batches_cover_every_column():
    data = batchify(np.arange(1003), 4)  # 3 tokens of remainder dropped
    batches = StreamBatches(data, seq_len=16, drop_last=False)
    assert [batches[i][0].shape[1] for i in range(len(batches))][-1] == (250 - 1) % 16
    targets = torch.cat([batches[i][1] for i in range(len(batches))], dim=1)
    assert torch.equal(targets, torch.from_numpy(data[:, 1:]))


def test_train_loader_is_in_order_and_not_shuffled(tiny_corpus: Path):
    dm = make_dm(tiny_corpus, batch_size=4, seq_len=10)
    first = [x for x, _ in dm.train_dataloader()]
    second = [x for x, _ in dm.train_dataloader()]
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    expected = batchify(dm.ids["train"], 4)[:, : len(first) * 10].astype(np.int64)
    assert torch.equal(torch.cat(first, 1), torch.from_numpy(expected))


def test_ddp_ranks_read_their_own_rows_of_one_stream(tiny_corpus: Path):
    """2 ranks x 2 rows together are the 4 rows one process reads with batch_size=4."""
    dm = make_dm(tiny_corpus, batch_size=2, seq_len=5)
    single = torch.cat(
        [x for x, _ in make_dm(tiny_corpus, batch_size=4, seq_len=5).train_dataloader()], dim=1
    )
    for rank in (0, 1):
        dm.trainer = SimpleNamespace(global_rank=rank, world_size=2)
        stream = torch.cat([x for x, _ in dm.train_dataloader()], dim=1)
        assert torch.equal(stream, single[2 * rank : 2 * rank + 2])


def test_crlf_and_a_missing_final_newline_count_like_lf(tmp_path: Path):
    lines = [f"w{i % 10} x{i % 3}" for i in range(1000)]
    files = {
        "lf": "\n".join(lines) + "\n",
        "crlf": "\r\n".join(lines) + "\r\n",
        "no_final_newline": "\n".join(lines),
    }
    counts = {}
    for name, text in files.items():
        (tmp_path / f"{name}.txt").write_bytes(text.encode())
        for level in ("char", "word"):
            dm = make_dm(tmp_path / f"{name}.txt", level=level, batch_size=4, seq_len=8)
            counts[name, level] = [dm.num_tokens(s) for s in ("train", "val", "test")]
    for level, total in (("char", 6000), ("word", 3000)):
        assert counts["lf", level] == counts["crlf", level] == counts["no_final_newline", level]
        assert sum(counts["lf", level]) == total


def test_one_line_of_50_mb_is_split_and_encoded(tmp_path: Path):
    path = tmp_path / "one_line.txt"
    path.write_text("anna karenina " * 3_600_000)  # 50.4 MB, no newline at all
    dm = make_dm(path, level="char", batch_size=32, seq_len=64)
    counts = [dm.num_tokens(s) for s in ("train", "val", "test")]
    assert sum(counts) == 14 * 3_600_000 + 1  # and the final newline it lacked
    assert counts[1] == pytest.approx(0.05 * sum(counts), rel=1e-3)
    assert len(dm.vocab) == 1 + len(set("anna karenina "))


def test_a_corpus_of_one_repeated_character(tmp_path: Path):
    path = tmp_path / "a.txt"
    path.write_text("a" * 5000)
    dm = make_dm(path, level="char", batch_size=4, seq_len=8)
    assert dm.vocab.itos == ["<unk>", "a"]
    assert np.all(dm.ids["train"] == 1)


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


def test_a_zero_test_fraction_leaves_no_test_split(tmp_path: Path):
    """data.split=[0.9,0.1,0.0]: the nanoGPT / char-rnn split of tiny-shakespeare."""
    path = tmp_path / "c.txt"
    path.write_text("".join(f"w{i % 10} x{i % 3}\n" for i in range(1000)))  # 6 chars a line
    dm = make_dm(path, batch_size=4, seq_len=8, split=[0.9, 0.1, 0.0])
    assert [dm.num_tokens(s) for s in ("train", "val", "test")] == [5400, 600, 0]
    assert dm.has_split("train") and dm.has_split("val") and not dm.has_split("test")
    with pytest.raises(UserError, match=r"has no test split \(data.split=\[0.9, 0.1, 0.0\]\)"):
        dm.test_dataloader()
    with pytest.raises(UserError, match="test split .* has 0 tokens"):  # a fraction asks for text
        make_dm(path, batch_size=4, seq_len=8, split=[0.9, 0.1 - 1e-9, 1e-9])
