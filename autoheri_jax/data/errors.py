"""The one exception every data reader raises for bad input files."""

from __future__ import annotations

from pathlib import Path


class DataFormatError(ValueError):
    """An input file is missing, unreadable or malformed.

    The message is "FILE:LINE: reason" (just "FILE: reason" when no line applies), so an editor or
    terminal can jump straight to the offending line.
    """

    def __init__(self, file: str | Path, line: int | None, reason: str):
        self.file = str(file)
        self.line = line
        self.reason = reason
        where = self.file if line is None else f"{self.file}:{line}"
        super().__init__(f"{where}: {reason}")
