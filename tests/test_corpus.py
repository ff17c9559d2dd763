import hashlib
from pathlib import Path

import pytest

from rnnlab.data import corpus
from rnnlab.data.corpus import Remote, embedded_text, load_splits
from rnnlab.data.textfile import TextFile
from rnnlab.errors import UserError


def test_default_corpus_is_real_text_of_size():
    text = embedded_text()
    assert len(text.encode("utf-8")) > 400_000
    assert 'The "assert" statement' in text


def test_split_is_contiguous_and_line_aligned(tmp_path: Path):
    text = "".join(f"line {i:04d}\n" for i in range(1000))  # 10 chars a line
    (tmp_path / "lines.txt").write_text(text)
    parts = load_splits(path=tmp_path / "lines.txt")
    assert "".join(parts[s] for s in ("train", "val", "test")) == text
    assert all(p.endswith("\n") for p in parts.values())
    assert parts["train"].count("\n") == 900
    assert abs(len(parts["val"]) - 0.05 * len(text)) < 20


def test_bad_split_fractions():
    with pytest.raises(UserError, match="three non-negative fractions summing to 1"):
        load_splits(split=(0.5, 0.5, 0.5))


def test_crlf_reads_like_lf(tmp_path: Path):
    (tmp_path / "crlf.txt").write_bytes(b"a b\r\nc d\r\n")
    (tmp_path / "lf.txt").write_bytes(b"a b\nc d\n")
    assert TextFile.from_path(tmp_path / "crlf.txt").read() == "a b\nc d\n"
    assert TextFile.from_path(tmp_path / "lf.txt").read() == "a b\nc d\n"


def test_non_utf8_names_file_and_offset(tmp_path: Path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("abc café\n".encode("latin-1"))
    with pytest.raises(
        UserError, match=r"latin1.txt is not UTF-8 text \(invalid byte at offset 7\)"
    ):
        TextFile.from_path(path).read()


def test_missing_path(tmp_path: Path):
    with pytest.raises(UserError, match="does not exist"):
        load_splits(path=tmp_path / "nope.txt")


def test_directory_layouts(tmp_path: Path):
    for name, text in (
        ("ptb.train.txt", "a b\n"),
        ("ptb.valid.txt", "c\n"),
        ("ptb.test.txt", "d\n"),
    ):
        (tmp_path / name).write_text(text)
    assert load_splits(path=tmp_path) == {"train": "a b\n", "val": "c\n", "test": "d\n"}
    (tmp_path / "ptb.train.txt").unlink()
    with pytest.raises(UserError, match="has no train file; expected one of: train.txt"):
        load_splits(path=tmp_path)


def test_preset_prefers_local_path(tiny_corpus: Path, monkeypatch):
    monkeypatch.setattr(corpus, "download_url_to_file", pytest.fail)
    assert load_splits("shakespeare_char", tiny_corpus)["train"]


def _serve_locally(monkeypatch, tmp_path: Path, payload: bytes, sha256: str) -> None:
    """Point the shakespeare preset at a file:// URL: the real downloader, no network."""
    source = tmp_path / "published.txt"
    source.write_bytes(payload)
    monkeypatch.setitem(
        corpus.PRESETS, "shakespeare_char", (Remote("input.txt", source.as_uri(), sha256),)
    )


def test_preset_download_checks_sha256(tmp_path: Path, monkeypatch):
    payload = "".join(f"to be or not {i}\n" for i in range(200)).encode()
    _serve_locally(monkeypatch, tmp_path, payload, hashlib.sha256(payload).hexdigest())
    splits = load_splits("shakespeare_char", data_dir=tmp_path / "data")
    assert (tmp_path / "data/shakespeare_char/input.txt").read_bytes() == payload
    assert "".join(splits.values()).encode() == payload


def test_preset_download_rejects_wrong_sha256(tmp_path: Path, monkeypatch):
    _serve_locally(monkeypatch, tmp_path, b"tampered\n", "0" * 64)
    with pytest.raises(UserError, match="SHA-256"):
        load_splits("shakespeare_char", data_dir=tmp_path / "data")
    assert not (tmp_path / "data/shakespeare_char/input.txt").exists()


def test_preset_offline_says_how_to_pass_a_local_copy(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")  # refused at once: offline
    with pytest.raises(
        UserError, match=r"if offline, pass a local copy with data.path=/path/to/input.txt"
    ):
        load_splits("shakespeare_char", data_dir=tmp_path)
