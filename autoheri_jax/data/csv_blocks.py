"""Text files read in blocks of whole lines, and the pyarrow fast path of the fixed-column formats.

A block is the bytes of consecutive whole lines (~BLOCK_BYTES), so memory is bounded by a block,
not the file, and line numbers follow from counting b"\\n". The fast path hands a block to
pyarrow's multi-threaded CSV reader and checks every column at once (pyarrow.compute / numpy). It
only vouches for a block when each of its rows is one the exact per-row parser (rowcheck.py)
accepts with the same values; anything else -- a bad row, but also what the two parsers might read
differently (non-ASCII bytes, a lone \\r, spaces, hex, a leading-zero id of 19+ digits) -- returns
None, and the caller re-parses that block with rowcheck, which names or counts the bad rows. So
the fast path changes speed, never results: clean blocks are the common case.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from autoheri_jax.data.errors import DataFormatError

BLOCK_BYTES = 16 << 20  # per pyarrow call: large enough to keep its threads busy
NUMERIC = b"0123456789,.-eE+\r\n"  # every byte a clean block of a numeric CSV may hold
_MAX_ID_CHARS = 18  # rowcheck.int_cells: at most 18 digits (a '-' makes 19: left to rowcheck)
_PARSE = pcsv.ParseOptions(quote_char=False, double_quote=False, escape_char=False)


def open_error(path: Path, e: OSError) -> DataFormatError:
    """The DataFormatError to raise for `e`, an OSError opening or reading `path`."""
    if not path.exists():
        return DataFormatError(path, None, "no such file or directory")
    return DataFormatError(path, None, "cannot read", str(e.strerror))


def header_like(got: list[str], header: list[str]) -> bool:
    """Whether a first line is meant as a header of `header`'s format, not data: at least half
    its fields (and two) are column names. Column names can look like ids ("101"), so one match
    proves nothing; a data row whose ids spell half the header does not occur."""
    names = set(header)
    k = sum(t in names for t in got)
    return k >= 2 and 2 * k >= len(got)


def header_mismatch(got: list[str], header: list[str], optional: list[str]) -> str:
    """Why the line `got` is not `header` (whose `optional` columns, the labels, may all be left
    out), by column name: 30-80 names are too many to compare as two truncated strings."""
    if not header_like(got, header):
        named = sum(t in set(header) for t in got)
        return (
            f"the first line is no such header ({len(got)} fields, {named} of them its "
            f"column names): {','.join(got)[:60]!r}"
        )
    has = set(got)
    want = [c for c in header if c not in optional] if not has & set(optional) else header
    missing = [c for c in want if c not in has]
    unexpected = [c for c in got if c not in set(header)]
    repeated = sorted({c for c in got if got.count(c) > 1})
    parts = [f"lacks columns {missing}"] * bool(missing)
    parts += [f"has unexpected columns {unexpected}"] * bool(unexpected)
    parts += [f"repeats columns {repeated}"] * bool(repeated)
    if not parts:  # the same columns in another order: the readers take them by position
        k = next(i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b)
        parts = [f"has the columns in another order: column {k + 1} is {got[k]!r}, not {want[k]!r}"]
    return "the header " + " and ".join(parts)


def read_blocks(
    path: Path, start: int, first_line: int, block_bytes: int | None = None
) -> Iterator[tuple[int, bytes, int]]:
    """(number of the block's first line, its bytes, bytes of the file read so far) from byte
    offset `start` (the start of line first_line). Every block but the last ends in b"\\n"; a line
    longer than block_bytes makes a longer block."""
    try:
        f = path.open("rb")
    except OSError as e:
        raise open_error(path, e) from e
    block_bytes = block_bytes or BLOCK_BYTES
    with f:
        f.seek(start)
        tail, done = b"", start
        while chunk := f.read(block_bytes):
            done += len(chunk)
            buf = tail + chunk if tail else chunk
            cut = buf.rfind(b"\n") + 1
            if not cut:
                tail = buf
                continue
            block, tail = (buf[:cut], buf[cut:]) if cut < len(buf) else (buf, b"")
            yield first_line, block, done - len(tail)
            first_line += block.count(b"\n")
        if tail:
            yield first_line, tail, done


def plain_bytes(block: bytes, allowed: bytes | None) -> bool:
    """True if both parsers split the block into the same lines and cells: ASCII only, \\r only
    in \\r\\n (pyarrow ends a line at a lone \\r, rowcheck does not), and, where the caller names
    them, no bytes but `allowed` (which rules out spaces, hex and other forms pyarrow's number
    parser takes and rowcheck's refuses)."""
    if not block.isascii():
        return False
    if b"\r" in block and block.count(b"\r") != block.count(b"\r\n"):  # memchr first: most
        return False  # files have no \r at all, and two full counts are two passes
    return allowed is None or not block.translate(None, allowed)


def read_csv(block: bytes, names: list[str], types: dict, columns: list[str]) -> pa.Table | None:
    """The block's rows as a table of `columns` (typed as in `types`), or None if pyarrow refuses
    it (wrong field count, an unparsable number, ...)."""
    convert = pcsv.ConvertOptions(
        column_types=types,
        include_columns=columns,
        null_values=[],  # an empty cell is an error, never a null
        strings_can_be_null=False,
        quoted_strings_can_be_null=False,
    )
    try:
        return pcsv.read_csv(
            pa.py_buffer(block),
            read_options=pcsv.ReadOptions(column_names=names, use_threads=True),
            parse_options=_PARSE,
            convert_options=convert,
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return None


def id_column(col: pa.ChunkedArray) -> np.ndarray | None:
    """int64 ids of a string column whose cells are each '-'? then <= 18 digits, else None."""
    col = col.combine_chunks()
    if len(col) and pc.max(pc.binary_length(col)).as_py() > _MAX_ID_CHARS:
        return None
    try:
        return pc.cast(col, pa.int64()).to_numpy()
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return None


def finite_column(col: pa.ChunkedArray) -> np.ndarray | None:
    """float32 values (the stored dtype) of a parsed float column, None if any is NaN or
    infinite once cast: 1e39 is a finite float64 but inf as float32 (rowcheck names it)."""
    with np.errstate(over="ignore"):
        v = col.to_numpy().astype(np.float32)
    return v if np.isfinite(v).all() else None


def token_mask(col: pa.ChunkedArray, tokens) -> np.ndarray:
    """bool: which cells of a string column are one of `tokens`."""
    return pc.is_in(col, value_set=pa.array(list(tokens))).to_numpy(zero_copy_only=False)


class ByteProgress:
    """A progress line in MB/s for one long file: silent for the first `after_s` seconds (short
    conversions print nothing), then redrawn in place on a terminal, or a line every
    `every_s` seconds elsewhere (logs stay short but never silent)."""

    def __init__(self, label: str, total: int, enabled: bool = True, after_s: float = 2.0):
        self.label, self.total, self.enabled = label, max(total, 1), enabled
        self.tty = enabled and sys.stderr.isatty()
        self.every_s = 0.5 if self.tty else 10.0
        self.start = time.perf_counter()
        self.next = self.start + after_s
        self.shown = -1  # bytes done at the last line drawn

    def update(self, done: int, rows: int, final: bool = False) -> None:
        """Draws the line for `done` bytes and `rows` rows, when one is due (or `final`)."""
        now = time.perf_counter()
        if not self.enabled or (now < self.next and not (final and 0 <= self.shown < done)):
            return
        self.next, self.shown = now + self.every_s, done
        el, frac = max(now - self.start, 1e-9), min(done / self.total, 1.0)
        bar = "#" * int(20 * frac) + "." * (20 - int(20 * frac))
        line = (
            f"prepare {self.label} [{bar}] {done / 1e6:,.0f}/{self.total / 1e6:,.0f} MB "
            f"{done / el / 1e6:,.1f} MB/s, {rows:,} rows, {rows / el:,.0f} rows/s"
        )
        sys.stderr.write(("\r" + line + "\x1b[K" + "\n" * final) if self.tty else line + "\n")
        sys.stderr.flush()

    def close(self, rows: int) -> None:
        """Ends the progress with the whole file's line (`rows` rows) where a line was drawn
        or is due; a short conversion stays silent."""
        if self.tty and self.shown == self.total:  # the last line drawn was already complete
            sys.stderr.write("\n")
        self.update(self.total, rows, final=True)
