"""Files written whole or not at all: a reader, or a run killed mid-write, never sees half a file.

Write to a temporary file beside the target (the same file system), flush it to
disk, then ``os.replace`` it over the target: the rename is atomic on POSIX and
Windows, so the target is always either the old file or the new one.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def write_atomically(path: str | Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Replace ``path`` with what ``write`` writes into the open binary file it is given."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomically(path: str | Path, text: str) -> None:
    write_atomically(path, lambda file: file.write(text.encode("utf-8")))
