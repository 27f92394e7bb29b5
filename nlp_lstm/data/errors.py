"""Errors the user can act on, reported as one line by the CLI (exit code 2)."""

from __future__ import annotations

from pathlib import Path


class UserError(Exception):
    """An error caused by the user's input or configuration, not by a bug."""


class ConfigError(UserError):
    """A configuration value that is unknown, missing or out of range."""


class DataError(UserError):
    """Bad or missing data, located by file and (when known) 1-based line number."""

    def __init__(self, path: str | Path, line: int | None, message: str) -> None:
        self.path = str(path)
        self.line = line
        self.message = message
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        return f"{where}: {self.message}"


def read_text(path: str | Path, what: str = "file") -> str:
    """Read a UTF-8 text file whole (a byte-order mark is dropped).

    Raises DataError naming the file (and the line, for bad UTF-8) when it is missing,
    unreadable, not UTF-8 or empty.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, None, f"{what} not found")
    data = path.read_bytes()
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        column = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        raise DataError(
            path, line, f"not valid UTF-8 (byte 0x{data[err.start]:02x} at column {column})"
        ) from None
    if not text.strip():
        raise DataError(path, None, f"{what} is empty")
    return text


def read_lines(path: str | Path, what: str = "file") -> list[str]:
    """Read a UTF-8 text file as lines (no newline characters); errors as :func:`read_text`."""
    lines = read_text(path, what).split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.rstrip("\r") for line in lines]
