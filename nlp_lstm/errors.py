"""Errors the user can act on, reported as one line by the CLI (exit code 2)."""

from __future__ import annotations

from pathlib import Path


class UserError(ValueError):
    """An error caused by the user's input or configuration, not by a bug (a ValueError)."""


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


def quote(text: str, limit: int = 100) -> str:
    """``repr(text)`` for an error message, cut to about ``limit`` characters (a 2 MB line
    must not become a 2 MB error)."""
    return repr(text if len(text) <= limit else text[:limit] + "...")
