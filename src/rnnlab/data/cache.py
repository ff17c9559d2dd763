"""The token cache: each split's ids as a memory-mapped .npy, so a second run does not tokenize.

An entry is a directory named by a SHA-256 of the corpus content and of everything
else that decides the ids (:class:`Recipe`). It holds ``train.npy``, ``val.npy``,
``test.npy`` (ids in the vocabulary's smallest integer type) and ``meta.json``
(the vocabulary and the counts), written last. Every file is written atomically, so
a run killed mid-write, or DDP ranks writing the same entry at once, leave a whole
entry or none; an entry that cannot be read is built again.

Building streams the text chunk by chunk: the vocabulary from the counts of the
training split, then the ids of each split straight into its .npy file. Memory
holds one chunk and its ids, never a split.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

from rnnlab.atomic import write_atomically, write_text_atomically
from rnnlab.data.corpus import SPLITS, Corpus, Span
from rnnlab.data.vocab import Vocab
from rnnlab.errors import UserError

log = logging.getLogger(__name__)

#: changes whenever an entry's layout or the tokenization changes, so old entries stay unused
FORMAT = 1


@dataclass(frozen=True)
class Recipe:
    """Everything besides the text that decides the ids."""

    level: str
    min_freq: int
    max_size: int | None
    split: tuple[float, float, float]
    #: a vocabulary given beforehand (a checkpoint's, for evaluation); None: built from train
    vocab: Vocab | None = None

    def key(self, corpus: Corpus) -> str:
        """The entry's name: a SHA-256 of the corpus content and of this recipe."""
        recipe = {
            "format": FORMAT,
            "content": corpus.digest(),
            "level": self.level,
            "min_freq": self.min_freq,
            "max_size": self.max_size,
            "split": self.split,
            "vocab": self.vocab.to_dict() if self.vocab else None,
        }
        return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class Tokens:
    """A corpus as ids: the vocabulary, each split's ids and how many of them became ``<unk>``."""

    vocab: Vocab
    ids: dict[str, np.ndarray]
    unknown: dict[str, int]


def load_tokens(corpus: Corpus, recipe: Recipe, cache_dir: str | Path | None) -> Tokens:
    """The tokens of ``corpus``: from the cache if there, else built (and cached).

    Without a cache directory they are built into a temporary one and read into memory.
    """
    if cache_dir is None:
        with tempfile.TemporaryDirectory() as tmp:
            write_entry(Path(tmp), corpus, recipe)
            return read_entry(Path(tmp), mmap_mode=None)
    entry = Path(cache_dir) / recipe.key(corpus)
    try:
        return read_entry(entry)
    except FileNotFoundError:
        pass
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("token cache entry %s is unreadable (%s); building it again", entry, exc)
    try:
        entry.mkdir(parents=True, exist_ok=True)
        write_entry(entry, corpus, recipe)
    except OSError as exc:
        raise UserError(
            f"could not write the token cache to {entry} ({exc}); "
            "give a writable data.cache_dir, or data.cache_dir=null for none."
        ) from None
    return read_entry(entry)


def write_entry(entry: Path, corpus: Corpus, recipe: Recipe) -> None:
    """Build the vocabulary (unless given) and each split's ids into ``entry``; meta.json last."""
    spans = corpus.splits()
    vocab = recipe.vocab or Vocab.from_chunks(
        spans["train"].chunks(), recipe.level, recipe.min_freq, recipe.max_size
    )
    counts: dict[str, tuple[int, int]] = {}
    for name, span in spans.items():

        def write(file: IO[bytes], name: str = name, span: Span = span) -> None:
            counts[name] = write_ids(file, span.chunks(), vocab)

        write_atomically(entry / f"{name}.npy", write)
    meta = {
        "vocab": vocab.to_dict(),
        "splits": {name: {"tokens": n, "unknown": u} for name, (n, u) in counts.items()},
    }
    write_text_atomically(entry / "meta.json", json.dumps(meta))


def write_ids(file: IO[bytes], chunks: Iterable[str], vocab: Vocab) -> tuple[int, int]:
    """Encode ``chunks`` straight into ``file`` as a 1-D .npy; returns (tokens, unknown).

    The header is written for length 0 and rewritten with the real length at the
    end: numpy pads every header so that the length can grow in place.
    """
    header = {"descr": np.lib.format.dtype_to_descr(vocab.dtype), "fortran_order": False}
    np.lib.format.write_array_header_1_0(file, {**header, "shape": (0,)})
    data_start = file.tell()
    tokens = unknown = 0
    for ids, missing in vocab.encode_chunks(chunks, vocab.dtype):
        file.write(ids.data)
        tokens, unknown = tokens + len(ids), unknown + missing
    file.seek(0)
    np.lib.format.write_array_header_1_0(file, {**header, "shape": (tokens,)})
    if file.tell() != data_start:
        raise RuntimeError(f"numpy's .npy header grew from {data_start} bytes; update write_ids")
    file.seek(0, 2)
    return tokens, unknown


def read_entry(entry: Path, mmap_mode: str | None = "r") -> Tokens:
    """The tokens in ``entry``, memory-mapped read-only unless ``mmap_mode`` is None.

    Raises (OSError, ValueError, KeyError, TypeError) if anything is missing or does
    not match meta.json.
    """
    meta = json.loads((entry / "meta.json").read_text())
    vocab = Vocab.from_dict(meta["vocab"])
    ids = {}
    for name in SPLITS:
        expected = meta["splits"][name]["tokens"]
        path = entry / f"{name}.npy"
        array = np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
        if array.shape != (expected,) or array.dtype != vocab.dtype:
            raise ValueError(f"{path} holds {array.dtype}{array.shape}, not {expected} ids")
        ids[name] = array
    unknown = {name: int(meta["splits"][name]["unknown"]) for name in SPLITS}
    return Tokens(vocab, ids, unknown)
