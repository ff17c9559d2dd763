"""Vocab: char- or word-level tokenization with ``<unk>`` and ``<eos>``.

Word level splits each line on whitespace and appends ``<eos>`` at every line end,
the convention of the PyTorch word_language_model example and the RNNLM papers
(WikiText-2 train: 2,088,628 tokens over 33,278 types). Char level keeps every
character, newlines included. A vocabulary is built from the training split only
and travels inside every checkpoint as plain JSON types.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from functools import cached_property
from itertools import repeat
from typing import Any

import numpy as np
from numpy.typing import DTypeLike

from rnnlab.errors import UserError

LEVELS = ("char", "word")
UNK, EOS = "<unk>", "<eos>"
#: Char level decodes ``<unk>`` as U+FFFD, the Unicode replacement character.
CHAR_UNK = "\ufffd"


def check_level(level: str) -> str:
    """Return ``level`` if known, else fail with a sentence listing the choices."""
    if level not in LEVELS:
        raise UserError(f"unknown tokenization level {level!r}; use one of: {', '.join(LEVELS)}.")
    return level


def end_line(text: str, level: str) -> str:
    """``text`` with its last line ended at word level: a missing final newline counts as present.

    Only for the end of a whole text: a chunk cut after a space leaves its line open.
    """
    if check_level(level) == "word" and text and not text.endswith("\n"):
        return text + "\n"
    return text


def pieces(chunks: Iterable[str], level: str) -> Iterator[str]:
    """The chunks of one whole text (cut after whitespace), the last with its line ended."""
    previous = None
    for chunk in chunks:
        if previous is not None:
            yield previous
        previous = chunk
    if previous is not None:
        yield end_line(previous, level)


def split_words(piece: str) -> list[str]:
    """Words of ``piece`` with ``<eos>`` for every ``\\n``, a last line not ended left open.

    The same tokens as splitting each line on whitespace and appending ``<eos>``, in
    two C-level passes instead of a Python loop over lines.
    """
    return piece.replace("\n", f" {EOS} ").split()


def tokenize(text: str, level: str) -> list[str]:
    """Split ``text`` into tokens: characters, or words with ``<eos>`` at every line end."""
    text = end_line(text, level)
    return list(text) if level == "char" else split_words(text)


def count_tokens(piece: str, level: str) -> Counter[str]:
    """How often each token of ``piece`` occurs, in order of first appearance.

    Char level counts code points with ``np.bincount``: no Python per character.
    Counters of consecutive pieces add up to the counter of their text, first-seen
    order included.
    """
    if check_level(level) == "word":
        return Counter(split_words(piece))
    counts = np.bincount(code_points(piece))
    present = sorted(np.flatnonzero(counts).tolist(), key=lambda code: piece.find(chr(code)))
    return Counter({chr(code): int(counts[code]) for code in present})


def code_points(text: str) -> np.ndarray:
    """The code points of ``text`` as an array: its bytes where it is ASCII (a quarter the size)."""
    if text.isascii():
        return np.frombuffer(text.encode("ascii"), np.uint8)
    return np.frombuffer(text.encode("utf-32-le"), np.uint32)


class Vocab:
    """A bijection between tokens and ids; id 0 is ``<unk>``."""

    def __init__(self, itos: Sequence[str], level: str) -> None:
        self.level = check_level(level)
        self.itos = list(itos)
        self.stoi = {tok: i for i, tok in enumerate(self.itos)}
        if len(self.stoi) != len(self.itos):
            raise ValueError("vocabulary tokens must be unique")
        if self.itos[0] != UNK:
            raise ValueError(f"vocabulary id 0 must be {UNK}")
        self.unk_id = 0
        self.eos_id = self.stoi.get(EOS)

    @classmethod
    def build(cls, text: str, level: str, min_freq: int = 1, max_size: int | None = None) -> Vocab:
        """Vocabulary of ``text``: tokens seen at least ``min_freq`` times, most frequent first.

        ``max_size`` counts the special tokens too. Ties keep first-seen order, so the
        same text always gives the same ids.
        """
        return cls.from_chunks([text], level, min_freq, max_size)

    @classmethod
    def from_chunks(
        cls, chunks: Iterable[str], level: str, min_freq: int = 1, max_size: int | None = None
    ) -> Vocab:
        """:meth:`build` over a text given in chunks cut after whitespace (a file's).

        Only the counts are held, never the text: the same ids however it is cut.
        """
        if min_freq < 1:
            raise UserError(f"min_freq must be at least 1, got {min_freq}.")
        specials = [UNK] if check_level(level) == "char" else [UNK, EOS]
        if max_size is not None and max_size <= len(specials):
            raise UserError(
                f"max_size must exceed the {len(specials)} special tokens, got {max_size}."
            )
        counts: Counter[str] = Counter()
        for piece in pieces(chunks, level):
            counts.update(count_tokens(piece, level))
        kept = [tok for tok, n in counts.most_common() if n >= min_freq and tok not in specials]
        if max_size is not None:
            kept = kept[: max_size - len(specials)]
        return cls(specials + kept, level)

    def __len__(self) -> int:
        return len(self.itos)

    @cached_property
    def dtype(self) -> np.dtype:
        """The smallest integer type holding every id: 1 byte a char, 2 for most word vocabs."""
        return next(
            np.dtype(t) for t in (np.uint8, np.uint16, np.int32) if len(self) <= np.iinfo(t).max + 1
        )

    def encode(self, text: str) -> np.ndarray:
        """Token ids of ``text`` (``<unk>`` for unseen tokens) as int64."""
        return self.encode_counting(text)[0]

    def encode_counting(self, text: str, dtype: DTypeLike = np.int64) -> tuple[np.ndarray, int]:
        """Token ids of ``text`` and how many of its tokens became ``<unk>``, in one pass.

        The count cannot come from the ids alone: a corpus may spell ``<unk>`` itself
        (WikiText-2 does), and that token is in the vocabulary.
        """
        return next(self.encode_chunks([text], dtype))

    def encode_chunks(
        self, chunks: Iterable[str], dtype: DTypeLike
    ) -> Iterator[tuple[np.ndarray, int]]:
        """:meth:`encode_counting` of each chunk of a text cut after whitespace (a file's)."""
        for piece in pieces(chunks, self.level):
            yield self._encode_piece(piece, dtype)

    def _encode_piece(self, piece: str, dtype: DTypeLike) -> tuple[np.ndarray, int]:
        if self.level == "char":
            # no char is spelled <unk>: id 0 means unknown, counted without a mask
            ids = self._char_ids(piece)
            return ids.astype(dtype, copy=False), len(ids) - int(np.count_nonzero(ids))
        ids = self._word_ids(piece)
        missing = ids < 0
        unknown = int(np.count_nonzero(missing))
        if unknown:
            ids[missing] = self.unk_id
        return ids.astype(dtype, copy=False), unknown

    def _word_ids(self, piece: str) -> np.ndarray:
        """Word ids (-1 where unknown) by dict lookups at C speed: ``map`` over ``stoi.get``."""
        words = split_words(piece)
        return np.fromiter(map(self.stoi.get, words, repeat(-1)), np.int32, len(words))

    def _char_ids(self, piece: str) -> np.ndarray:
        """Char ids (0 where unknown) by a table lookup of bytes or code points, not per char."""
        if piece.isascii() and self.dtype == np.uint8:  # bytes.translate: a C loop, 1 GB/s
            return np.frombuffer(piece.encode("ascii").translate(self._byte_table), np.uint8)
        codes = np.frombuffer(piece.encode("utf-32-le"), np.uint32)
        table = self._code_point_table  # its last entry is 0: for every code beyond it
        return table.take(np.minimum(codes, len(table) - 1))

    @cached_property
    def _byte_table(self) -> bytes:
        return self._table(256).tobytes()

    @cached_property
    def _code_point_table(self) -> np.ndarray:
        return self._table(max((ord(tok) for tok in self.itos if len(tok) == 1), default=0) + 2)

    def _table(self, size: int) -> np.ndarray:
        """Id of each code point below ``size`` in the vocabulary's dtype, 0 (unknown) if absent."""
        table = np.zeros(size, self.dtype)
        for i, tok in enumerate(self.itos):
            if len(tok) == 1 and ord(tok) < size:
                table[ord(tok)] = i
        return table

    def unknown_tokens(self, text: str) -> list[str]:
        """The distinct tokens of ``text`` outside the vocabulary, in order of appearance."""
        return list(dict.fromkeys(t for t in tokenize(text, self.level) if t not in self.stoi))

    def prompt_ids(self, prompt: str, allow_unknown: bool = False) -> list[int]:
        """Ids to start generating from; an empty prompt starts a new line (``\\n`` or ``<eos>``).

        Tokens the model never saw are refused, naming them, unless ``allow_unknown``
        maps them to ``<unk>``.
        """
        unknown = self.unknown_tokens(prompt)
        if unknown and not allow_unknown:
            shown = " ".join(repr(tok) for tok in unknown[:20])
            raise UserError(
                f"the prompt holds {len(unknown)} token(s) the model never saw: {shown}; "
                "remove them, or pass unknown=unk to map them to <unk>."
            )
        if not prompt:
            return [self.stoi.get(EOS if self.level == "word" else "\n", self.unk_id)]
        ids = self.encode(prompt).tolist()
        if self.level == "word" and not prompt.endswith("\n"):
            ids.pop()  # tokenize ends every line with <eos>; an open prompt continues its line
        if not ids:
            raise UserError(
                f"the prompt {prompt!r} holds no tokens; give some text or none at all."
            )
        return ids

    def continue_text(self, prompt: str, ids: Iterable[int]) -> str:
        """``prompt`` followed by the text of ``ids``, a word apart at word level."""
        sep = " " if self.level == "word" and prompt and not prompt[-1].isspace() else ""
        return prompt + sep + self.decode(ids)

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids``: chars joined as they are; words by spaces, ``<eos>`` a newline."""
        tokens = [self.itos[int(i)] for i in ids]
        if self.level == "char":
            return "".join(CHAR_UNK if tok == UNK else tok for tok in tokens)
        lines, words = [], []
        for tok in tokens:
            if tok == EOS:
                lines.append(" ".join(words) + "\n")
                words = []
            else:
                words.append(tok)
        return "".join(lines) + " ".join(words)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types, so a checkpoint loads with ``torch.load(weights_only=True)``."""
        return {"level": self.level, "itos": list(self.itos)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Vocab:
        return cls(data["itos"], data["level"])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and (self.level, self.itos) == (other.level, other.itos)

    def __repr__(self) -> str:
        return f"Vocab(level={self.level!r}, size={len(self)})"
