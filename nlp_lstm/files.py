"""Files: reading user text with one-line errors, and writing results atomically."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from nlp_lstm.errors import DataError

BOM = "\ufeff"


def read_text(path: str | Path, what: str = "file") -> str:
    """Read a UTF-8 text file whole; a byte-order mark starting any line is dropped
    (files concatenated with ``cat`` carry one in the middle).

    Raises DataError naming the file (and the line, for bad UTF-8) when it is missing,
    unreadable, not UTF-8 or empty.
    """
    path = Path(path)
    if path.is_dir():
        raise DataError(path, None, f"{what} is a directory, not a file")
    if not path.is_file():
        raise DataError(path, None, f"{what} not found")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DataError(path, None, f"cannot read {what}: {err.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        column = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        raise DataError(
            path, line, f"not valid UTF-8 (byte 0x{data[err.start]:02x} at column {column})"
        ) from None
    if BOM in text:
        text = text.removeprefix(BOM).replace("\n" + BOM, "\n")
    if not text.strip():
        raise DataError(path, None, f"{what} is empty")
    return text


def read_lines(path: str | Path, what: str = "file") -> list[str]:
    """Read a UTF-8 text file as lines (no newline characters); errors as :func:`read_text`."""
    lines = read_text(path, what).split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.rstrip("\r") for line in lines]


def atomic_write(path: str | Path, write: Callable[[IO[Any]], None], binary: bool = True) -> None:
    """Call ``write(handle)`` on a temporary file in ``path``'s folder, fsync, then rename
    it over ``path``: a crash at any point leaves the old file or the new one, never a
    torn file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(
            fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})
        ) as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write(path, lambda handle: handle.write(text), binary=False)


def atomic_save(payload: Any, path: str | Path) -> None:
    """``torch.save`` ``payload`` to ``path`` atomically (see :func:`atomic_write`)."""
    import torch

    atomic_write(path, lambda handle: torch.save(payload, handle))
