"""Reading, counting and encoding in chunks gives what whole-text tokenization gives."""

from pathlib import Path

import numpy as np
import pytest

from rnnlab.data import textfile
from rnnlab.data.corpus import Corpus
from rnnlab.data.datamodule import LMDataModule
from rnnlab.data.textfile import TextFile
from rnnlab.data.vocab import EOS, UNK, Vocab, tokenize
from rnnlab.errors import UserError

#: CRLF, non-ASCII, a literal <eos>, Unicode whitespace, a long line without newline at the end
TEXT = "héllo wörld ✓\r\n日本語 text <eos> x\u2028y\n\nhéllo again\r\n" + "the end " * 40


@pytest.mark.parametrize("chunk_bytes", [1, 7, 64, 1 << 20])
def test_chunks_read_the_normalised_text(tmp_path: Path, chunk_bytes: int):
    path = tmp_path / "t.txt"
    path.write_bytes(TEXT.encode())
    file = TextFile.from_path(path, chunk_bytes)
    normalised = TEXT.replace("\r\n", "\n") + "\n"  # and the final newline it lacked
    assert file.read() == normalised and len(file) == len(normalised)
    assert file.read(3, 40) == normalised[3:40]
    chunks = list(file.chunks())
    assert all(c.endswith(("\n", " ")) for c in chunks)  # never inside a word


@pytest.mark.parametrize("level", ["char", "word"])
@pytest.mark.parametrize("chunk_bytes", [1, 7, 64])
def test_vocab_and_ids_do_not_depend_on_the_chunks(level: str, chunk_bytes: int):
    text = TEXT.replace("\r\n", "\n")
    whole = Vocab.build(text, level, max_size=6)
    chunks = list(TextFile.from_text(text, "t", chunk_bytes).chunks())
    # the text ends without a newline: from_chunks must end its last line as build does
    chunks[-1] = chunks[-1].removesuffix("\n")
    assert Vocab.from_chunks(chunks, level, max_size=6) == whole
    ids, unknown = zip(*whole.encode_chunks(chunks, whole.dtype), strict=True)
    expected, expected_unknown = whole.encode_counting(text)
    assert np.concatenate(ids).tolist() == expected.tolist()
    assert sum(unknown) == expected_unknown > 0


def test_word_tokens_split_lines_on_newlines_only_and_eos_is_eos():
    assert tokenize("a\u2028b c\n\nd <eos>", "word") == ["a", "b", "c", EOS, EOS, "d", EOS, EOS]


def test_counts_break_ties_by_first_appearance_across_chunks():
    vocab = Vocab.from_chunks(["b a ", "c a ", "b c\n"], "word")
    assert vocab.itos == [UNK, EOS, "b", "a", "c"]  # all three twice: b first seen, then a, c
    chars = Vocab.from_chunks(["ba", "zab"], "char")
    assert chars.itos == [UNK, "b", "a", "z"]


def test_smallest_id_type():
    assert Vocab.build("abc", "char").dtype == np.uint8
    assert Vocab([UNK, *(f"w{i}" for i in range(255))], "word").dtype == np.uint8
    assert Vocab([UNK, *(f"w{i}" for i in range(256))], "word").dtype == np.uint16
    assert Vocab([UNK, *(f"w{i}" for i in range(70_000))], "word").dtype == np.int32


def test_unknown_chars_beyond_the_table_count():
    vocab = Vocab.build("ab", "char")
    ids, unknown = vocab.encode_counting("a✓b日c")  # a non-ASCII piece: the code point table
    assert ids.tolist() == [1, 0, 2, 0, 0] and unknown == 3


def test_non_utf8_deep_in_a_file_names_its_offset(tmp_path: Path):
    path = tmp_path / "late.txt"
    path.write_bytes(b"good line\n" * 100 + "café\n".encode("latin-1"))
    with pytest.raises(
        UserError, match=r"late.txt is not UTF-8 text \(invalid byte at offset 1003\)"
    ):
        len(TextFile.from_path(path, chunk_bytes=16))


def test_splits_of_a_chunked_file_match_one_chunk(tmp_path: Path, monkeypatch):
    path = tmp_path / "c.txt"
    path.write_text("".join(f"w{i % 10} x{i % 3} é\n" for i in range(3000)))
    whole = LMDataModule(path=str(path), level="word", batch_size=4, seq_len=8)
    whole.setup()
    monkeypatch.setattr(textfile, "CHUNK_BYTES", 100)
    chunked = LMDataModule(path=str(path), level="word", batch_size=4, seq_len=8)
    chunked.setup()
    assert chunked.vocab == whole.vocab
    for split in ("train", "val", "test"):
        assert chunked.ids[split].tolist() == whole.ids[split].tolist()
    assert [chunked.num_tokens(s) for s in ("train", "val", "test")] == [10800, 600, 600]


def test_zero_test_fraction_gives_an_empty_test_split():
    file = TextFile.from_text("".join(f"line {i:04d}\n" for i in range(1000)), "t")
    spans = Corpus((file,), (0.9, 0.1, 0.0)).splits()
    assert [len(s.text()) for s in spans.values()] == [9000, 1000, 0]
