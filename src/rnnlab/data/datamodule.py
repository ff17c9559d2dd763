"""LMDataModule: corpus -> vocabulary -> token ids -> stream batches for truncated BPTT.

Stream batching, as in the classic RNN LM papers and the PyTorch word_language_model
example: the token stream is cut into ``batch_size`` contiguous rows; batch *i* is
columns ``[i*T, (i+1)*T)`` of every row and its targets are the same columns shifted
by one. Row *r* of batch *i+1* continues row *r* of batch *i*, so the model can carry
its hidden state from one batch to the next. The batches are served in order: the
DataLoader never shuffles them, and under DDP every rank reads its own rows of the
stream. A checkpoint records the next training batch, so a resumed run goes on
from there.

Ids stay in the vocabulary's smallest integer type, memory-mapped from the token
cache (:mod:`rnnlab.data.cache`); each batch becomes int64 as it is served.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, SequentialSampler

from rnnlab.data.cache import Recipe, load_tokens
from rnnlab.data.corpus import PRESETS, check_split, fetch, open_corpus
from rnnlab.data.vocab import Vocab, check_level
from rnnlab.errors import UserError, check_int


def batchify(ids: np.ndarray, rows: int) -> np.ndarray:
    """Cut a 1-D stream into ``rows`` contiguous rows, dropping the ``len % rows`` tail (a view)."""
    cols = len(ids) // rows
    return ids[: rows * cols].reshape(rows, cols)


class StreamBatches(Dataset):
    """Batch *i* of a batchified stream: ``(inputs, targets)``, each ``(rows, <= seq_len)``.

    ``drop_last`` trims the incomplete tail (training: every batch is a full window);
    without it the last batch is shorter, so evaluation covers every column.
    """

    def __init__(self, data: np.ndarray, seq_len: int, drop_last: bool) -> None:
        self.data, self.seq_len = data, seq_len
        steps = data.shape[1] - 1
        self.length = steps // seq_len if drop_last else -(-steps // seq_len)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= i < self.length:
            raise IndexError(i)
        start = i * self.seq_len
        end = min(start + self.seq_len, self.data.shape[1] - 1)
        # a copy as int64 (what embeddings and cross-entropy take), writable unlike the map
        window = torch.from_numpy(np.array(self.data[:, start : end + 1], dtype=np.int64))
        return window[:, :-1], window[:, 1:]


class ResumableSampler(SequentialSampler):
    """Batches 0, 1, ..., n-1 in order; after a resume the next pass starts at ``start``.

    A SequentialSampler, so that Lightning knows the stream is not shuffled.
    """

    def __init__(self, batches: StreamBatches, start: int = 0) -> None:
        super().__init__(batches)
        self.start = start

    def __iter__(self) -> Iterator[int]:
        start, self.start = self.start, 0
        return iter(range(start, len(self.data_source)))


class LMDataModule(L.LightningDataModule):
    """Char- or word-level language-modelling data with stream batching.

    The vocabulary is built from the training split only; val/test tokens outside
    it become ``<unk>``. With a ``cache_dir`` the ids are cached there, keyed by the
    corpus content and every setting that decides them.
    """

    def __init__(
        self,
        source: str = "embedded",
        path: str | None = None,
        level: str = "char",
        batch_size: int = 32,
        seq_len: int = 64,
        eval_batch_size: int | None = None,
        split: Sequence[float] = (0.9, 0.05, 0.05),
        min_freq: int = 1,
        max_size: int | None = None,
        data_dir: str = "data",
        num_workers: int = 0,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__()
        check_int("data.batch_size", batch_size, 1)
        check_int("data.seq_len", seq_len, 1)
        if eval_batch_size is not None:
            check_int("data.eval_batch_size", eval_batch_size, 1)
        self.source, self.path, self.level = source, path, check_level(level)
        self.batch_size, self.seq_len = batch_size, seq_len
        self.eval_batch_size = eval_batch_size or batch_size
        self.split, self.min_freq, self.max_size = check_split(split), min_freq, max_size
        self.data_dir, self.num_workers = Path(data_dir), num_workers
        self.cache_dir = cache_dir
        self.vocab: Vocab | None = None
        self.ids: dict[str, np.ndarray] = {}
        self.unknown: dict[str, int] = {}
        #: the training batch a resumed run starts its first epoch at
        self.train_start = 0

    def prepare_data(self) -> None:
        """Download a preset if needed (Lightning calls this on one process per node)."""
        if self.path is None and self.source in PRESETS:
            fetch(self.source, self.data_dir)

    def setup(self, stage: str | None = None) -> None:
        """Tokenize and check the corpus once (or open its cached ids); later calls are free.

        A vocabulary set beforehand (a checkpoint's, for evaluation) is kept; otherwise
        the training split builds one. ``unknown`` counts the tokens of each split it lacks.
        A split whose fraction is 0 may be empty (:meth:`has_split`): test only, since
        training and validation need theirs.
        """
        if self.ids:
            return
        corpus = open_corpus(self.source, self.path, self.split, self.data_dir)
        recipe = Recipe(self.level, self.min_freq, self.max_size, self.split, self.vocab)
        tokens = load_tokens(corpus, recipe, self.cache_dir)
        if len(tokens.ids["train"]) == 0:
            raise UserError(f"the training split of {self.describe()} is empty; give more text.")
        self._check_length("train", tokens.ids["train"], self.batch_size, self.seq_len + 1)
        self._check_length("val", tokens.ids["val"], self.eval_batch_size, 2)
        if self.split[2] or len(tokens.ids["test"]):
            self._check_length("test", tokens.ids["test"], self.eval_batch_size, 2)
        self.vocab, self.ids, self.unknown = tokens.vocab, tokens.ids, tokens.unknown

    def has_split(self, split: str) -> bool:
        """Whether ``split`` has tokens (after :meth:`setup`): data.split may leave test empty."""
        return len(self.ids.get(split, ())) > 0

    def describe(self) -> str:
        """The corpus as the user named it, for error messages."""
        return f"data.path={self.path}" if self.path else f"corpus {self.source!r}"

    def _check_length(self, split: str, ids: np.ndarray, rows: int, per_row: int) -> None:
        needed = rows * per_row
        if len(ids) < needed:
            raise UserError(
                f"the {split} split of {self.describe()} has {len(ids)} tokens, but "
                f"{rows} rows of {per_row} need at least {needed}; "
                "use a longer text or a smaller batch_size / seq_len."
            )

    def num_tokens(self, split: str) -> int:
        """Tokens in ``split`` after tokenization (``<eos>`` included at word level)."""
        return len(self.ids[split])

    def _rows(self, split: str, rows: int) -> np.ndarray:
        """This rank's ``rows`` rows of the batchified stream.

        The split is batchified into ``world * rows`` rows and rank *r* takes rows
        ``r * rows`` to ``(r + 1) * rows - 1``: DDP with ``rows`` per rank sees exactly
        the batches one process sees with ``world * rows``.
        """
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer else (0, 1)
        return batchify(self.ids[split], rows * world)[rank * rows : (rank + 1) * rows]

    def _loader(self, split: str, rows: int, drop_last: bool, start: int = 0) -> DataLoader:
        if not self.has_split(split):
            raise UserError(
                f"{self.describe()} has no {split} split (data.split={list(self.split)}); "
                f"give the {split} split a fraction above 0."
            )
        batches = StreamBatches(self._rows(split, rows), self.seq_len, drop_last)
        if len(batches) == 0:  # setup checked one process; this is every rank's share
            world = self.trainer.world_size if self.trainer else 1
            raise UserError(
                f"the {split} split of {self.describe()} is too short for {world} processes "
                f"of {rows} rows; use a longer text, fewer devices or a smaller batch_size."
            )
        # batch_size=None: each item already is a (rows, T) batch, taken in stream order.
        # A private generator: making an iterator draws no number from the global RNG.
        return DataLoader(
            batches,
            batch_size=None,
            sampler=ResumableSampler(batches, start),
            num_workers=self.num_workers,
            generator=torch.Generator(),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.batch_size, drop_last=True, start=self.train_start)

    def state_dict(self) -> dict[str, Any]:
        """Where the training stream is, for a checkpoint: the next batch of this epoch."""
        if self.trainer is None or self.trainer.state.fn != "fit":
            return {}
        done = self.trainer.fit_loop.epoch_loop.batch_idx + 1
        return {"train_start": done if done < self.trainer.num_training_batches else 0}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.train_start = state_dict.get("train_start", 0)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", self.eval_batch_size, drop_last=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.eval_batch_size, drop_last=False)
