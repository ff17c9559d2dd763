"""Vocab: char- or word-level tokenization with ``<unk>`` and ``<eos>``.

Word level splits each line on whitespace and appends ``<eos>`` at every line end,
the convention of the PyTorch word_language_model example and the RNNLM papers
(WikiText-2 train: 2,088,628 tokens over 33,278 types). Char level keeps every
character, newlines included. A vocabulary is built from the training split only
and travels inside every checkpoint as plain JSON types.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

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


def lines_of(text: str) -> list[str]:
    """Lines without their ``\\n``; a missing final newline counts the same as a present one."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def tokenize(text: str, level: str) -> list[str]:
    """Split ``text`` into tokens: characters, or words with ``<eos>`` at every line end."""
    if check_level(level) == "char":
        return list(text)
    tokens: list[str] = []
    for line in lines_of(text):
        tokens.extend(line.split())
        tokens.append(EOS)
    return tokens


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

        ``max_size`` counts the special tokens too. Ties keep first-seen order, so
        the same text always gives the same ids.
        """
        if min_freq < 1:
            raise UserError(f"min_freq must be at least 1, got {min_freq}.")
        specials = [UNK] if check_level(level) == "char" else [UNK, EOS]
        if max_size is not None and max_size <= len(specials):
            raise UserError(
                f"max_size must exceed the {len(specials)} special tokens, got {max_size}."
            )
        counts = Counter(tokenize(text, level))
        kept = [tok for tok, n in counts.most_common() if n >= min_freq and tok not in specials]
        if max_size is not None:
            kept = kept[: max_size - len(specials)]
        return cls(specials + kept, level)

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, text: str) -> np.ndarray:
        """Token ids of ``text`` (``<unk>`` for unseen tokens) as int64."""
        return self.encode_counting(text)[0]

    def encode_counting(self, text: str) -> tuple[np.ndarray, int]:
        """Token ids of ``text`` and how many of its tokens became ``<unk>``, in one pass.

        The count cannot come from the ids alone: a corpus may spell ``<unk>`` itself
        (WikiText-2 does), and that token is in the vocabulary.
        """
        if self.level == "char":
            ids = self._char_ids(text)
        else:
            tokens = tokenize(text, self.level)
            ids = np.fromiter((self.stoi.get(tok, -1) for tok in tokens), np.int64, len(tokens))
        missing = ids < 0
        ids[missing] = self.unk_id
        return ids, int(missing.sum())

    def _char_ids(self, text: str) -> np.ndarray:
        """Char ids by table lookup on the code points (-1 where unknown): no per-char Python."""
        codes = np.frombuffer(text.encode("utf-32-le"), np.uint32)
        known = [(ord(tok), i) for i, tok in enumerate(self.itos) if len(tok) == 1]
        table = np.full(max((c for c, _ in known), default=0) + 2, -1, np.int64)
        for code, i in known:
            table[code] = i
        return table[np.minimum(codes, len(table) - 1)]  # the last entry is -1: beyond the table

    def unknown_tokens(self, text: str) -> list[str]:
        """The distinct tokens of ``text`` outside the vocabulary, in order of appearance."""
        return list(dict.fromkeys(t for t in tokenize(text, self.level) if t not in self.stoi))

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
