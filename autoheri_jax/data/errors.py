"""The exceptions of the data layer: bad input files (DataFormatError), bad stores (StoreError)."""

from __future__ import annotations

from pathlib import Path


class DataFormatError(ValueError):
    """An input file is missing, unreadable or malformed.

    The message is "FILE:LINE: reason" (just "FILE: reason" when no line applies), so an editor or
    terminal can jump straight to the offending line; an optional `detail` follows as
    "FILE:LINE: reason: detail". Attributes: `file` (str), `line` (1-based int or None),
    `reason` (a short category, e.g. "wrong field count"; bad-row counts are keyed by it) and
    `detail` (free text, possibly empty).
    """

    def __init__(self, file: str | Path, line: int | None, reason: str, detail: str = ""):
        self.file = str(file)
        self.line = line
        self.reason = reason
        self.detail = detail
        where = self.file if line is None else f"{self.file}:{line}"
        super().__init__(f"{where}: {reason}" + (f": {detail}" if detail else ""))

    def __reduce__(self):  # picklable despite the custom signature (e.g. from worker processes)
        return type(self), (self.file, self.line, self.reason, self.detail)


class StoreError(ValueError):
    """A store is missing, unfinished, inconsistent or modified; the message names the path."""
