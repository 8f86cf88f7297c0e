"""The raw Ali-CCP line format and its exact parser (the reference the block fast path must match).

A line is `sample_id,click,conversion,common_feature_index,feature_count,feature_list` (skeleton)
or `common_feature_index,feature_count,feature_list` (common); a feature_list is entries
`field\\x02feature_id\\x03value` joined by `\\x01`. _Parser turns chunks of lines into columns.

Two engines share one contract -- a piece of input is accepted as a whole only if every line in it
is one _problem accepts, with the values _problem's parse gives:
- "arrow" (default): aliccp_blocks.parse_block reads a block of whole lines as bytes (pyarrow
  casts, numpy separator checks); a refused block is bisected on line boundaries, and pieces of
  <= 64 lines go to the "python" path below.
- "python": the chunk takes a vectorized path over Python bytes (split / join / replace, one
  np.fromiter per column). When anything in it looks wrong, a per-line check names the bad lines
  and reasons: strict raises DataFormatError at the first, skip drops and counts them.
So errors, line numbers, skip counts and stores do not depend on the engine, only speed does.
"""

from __future__ import annotations

from itertools import repeat
from operator import methodcaller
from pathlib import Path

import numpy as np

from autoheri_jax.data import aliccp_blocks
from autoheri_jax.data.errors import DataFormatError

USER_SINGLE = ["101", "121", "122", "124", "125", "126", "127", "128", "129"]
ITEM_SINGLE = ["205", "206", "207", "216", "508", "509", "702", "301"]
ITEM_BAGS = ["210", "853"]
USER_BAGS = ["109_14", "110_14", "127_14", "150_14"]
MISSING = np.iinfo(np.int64).min  # raw id of an absent single-valued field: never in a vocab
_MISSING = MISSING
_F32_MAX = aliccp_blocks.F32_MAX
_BLOCK, _CHUNK_BYTES = 8 << 20, 32 << 20  # read size; a chunk ends after this many bytes too
_SEPS = np.array([2, 3, 1], np.uint8)  # \x02 \x03 \x01: the separator cycle of a feature_list
_COUNT3 = methodcaller("count", b"\x03")


def _entries(flists, codes: dict):
    """(entries per row, row, field code (-1: unknown), id, value, unknown field names) of every
    entry of a chunk, or None if anything looks off."""
    n = len(flists)
    per_row = np.fromiter(map(_COUNT3, flists), np.int64, n)
    e = int(per_row.sum())
    big = b"\x01".join([f for f in flists if f])
    a = np.frombuffer(big, np.uint8)
    seps = a[(a - 1) < 3]  # uint8 wraps, so this keeps exactly \x01, \x02, \x03
    if not e:  # only empty feature_lists are valid (the cycle check below needs an entry)
        z = np.zeros(0, np.int64)
        return None if big else (per_row, z, z, z, np.zeros(0, np.float32), [])
    if len(seps) != 3 * e - 1 or not (np.append(seps, 1).reshape(-1, 3) == _SEPS).all():
        return None
    toks = big.replace(b"\x02", b"\x01").replace(b"\x03", b"\x01").split(b"\x01") if e else []
    try:
        field = np.fromiter(map(codes.get, toks[0::3], repeat(-1, e)), np.int64, e)
        ids = np.fromiter(map(int, toks[1::3]), np.int64, e)
        uniq = dict.fromkeys(toks[2::3])  # few distinct values: parse each once
        pos = dict(zip(uniq, range(len(uniq)), strict=True))
        vals = np.fromiter(map(float, uniq), np.float64, len(uniq))
        vals = vals[np.fromiter(map(pos.__getitem__, toks[2::3]), np.int64, e)]
    except (ValueError, OverflowError):
        return None
    unknown = [toks[3 * k] for k in np.flatnonzero(field < 0)]
    if b"" in unknown or (ids == _MISSING).any():
        return None
    if not (np.abs(vals) <= _F32_MAX).all():  # also false for NaN
        return None
    return per_row, np.repeat(np.arange(n), per_row), field, ids, vals.astype(np.float32), unknown


def _num(conv, token: bytes):
    try:
        return conv(token)
    except ValueError:
        return None


class _Parser:
    """Parses the chunks of one raw file (see the module docstring for fast and slow paths)."""

    def __init__(self, path: Path, skeleton: bool, skip: bool, index: dict, bad, ignored):
        self.path, self.skeleton, self.skip = path, skeleton, skip
        self.singles, self.bags = (ITEM_SINGLE, ITEM_BAGS) if skeleton else (USER_SINGLE, USER_BAGS)
        self.single_names = {f.encode() for f in self.singles}
        self.ncols = 6 if skeleton else 3
        self.codes = {f.encode(): i for i, f in enumerate(self.singles + self.bags)}
        self.index, self.bad, self.ignored = index, bad, ignored
        self.rows = 0  # lines accepted so far
        self.code_names = aliccp_blocks.binary(list(self.codes))
        self._keys = (-1, None, None)  # (len(index), its keys as an array, their rows)

    def key_array(self):
        """The common index's keys (a skeleton file only reads it: built once per file)."""
        if self._keys[0] != len(self.index):
            keys = aliccp_blocks.binary(list(self.index))
            rows = np.fromiter(self.index.values(), np.int64, len(self.index))
            self._keys = (len(self.index), keys, rows)
        return self._keys[1]

    def key_rows(self) -> np.ndarray:
        return self._keys[2]

    def parse_block(self, first: int, buf: bytes, unterminated: bool):
        """Yields the parsed pieces of a block of whole lines (engine "arrow"): the block fast
        path, bisected on refusal; pieces of <= 64 lines go to `parse` (the exact path)."""
        whole = buf + b"\n" if unterminated else buf
        if (out := aliccp_blocks.parse_block(self, whole)) is not None:
            yield out
            return
        if buf.count(b"\n") + unterminated > 64:
            a, b = aliccp_blocks.split_half(buf)
            yield from self.parse_block(first, a, False)
            yield from self.parse_block(first + a.count(b"\n"), b, unterminated)
            return
        lines = buf.split(b"\n")
        if not unterminated:
            lines.pop()  # the empty piece after the last newline
        yield from self.parse(first, lines, unterminated)

    def parse(self, first: int, lines: list[bytes], unterminated: bool):
        """Yields the parsed pieces of a chunk; a refused chunk is bisected down to small pieces,
        which the per-line check then sorts out (so a rare bad line costs little)."""
        if (out := self._fast(lines)) is not None:
            yield out
            return
        if len(lines) > 64:
            h = len(lines) // 2
            yield from self.parse(first, lines[:h], False)
            yield from self.parse(first + h, lines[h:], unterminated)
            return
        problems = self._check(lines, unterminated)
        if problems and not self.skip:
            raise DataFormatError(self.path, first + problems[0][0], *problems[0][1:])
        self.bad.update(p[1] for p in problems)
        drop = {p[0] for p in problems}
        lines = [x for k, x in enumerate(lines) if k not in drop]
        if lines and (out := self._fast(lines)) is None:  # refused what the check accepts: a bug
            raise DataFormatError(self.path, first, "could not parse chunk", "internal error")
        if lines:
            yield out

    def _fast(self, lines: list[bytes]):
        n = len(lines)
        if not all(map(bytes.isascii, lines)):
            try:
                for x in lines:
                    x.decode("utf-8")
            except UnicodeDecodeError:
                return None
        try:
            cols = list(zip(*map(methodcaller("split", b",", self.ncols - 1), lines), strict=True))
            if len(cols) != self.ncols:
                return None
            expect = np.fromiter(map(int, cols[-2]), np.int64, n)
        except (ValueError, OverflowError):
            return None
        ent = _entries(cols[-1], self.codes)
        if ent is None or not np.array_equal(ent[0], expect):
            return None
        _, rows, field, ids, vals, unknown = ent
        ns = len(self.singles)
        m = (field >= 0) & (field < ns)
        key = rows[m] * ns + field[m]
        if key.size and np.bincount(key, minlength=n * ns).max() > 1:
            return None  # a single-valued field repeated
        single = np.full(n * ns, _MISSING, np.int64)
        single[key] = ids[m]
        bags = {}
        for j, name in enumerate(self.bags):
            mb = field == ns + j
            bags[name] = (np.bincount(rows[mb], minlength=n), ids[mb], vals[mb])
        keys = cols[-3]
        if self.skeleton:
            click, conv = b"".join(cols[1]), b"".join(cols[2])
            if len(click) != n or len(conv) != n:
                return None
            labels = np.stack([np.frombuffer(click, np.uint8), np.frombuffer(conv, np.uint8)], 1)
            labels = labels - 48  # b"0" / b"1"; other bytes wrap to > 1
            crow = np.fromiter(map(self.index.get, keys, repeat(-1, n)), np.int64, n)
            if labels.max() > 1 or (labels[:, 1] > labels[:, 0]).any() or crow.min() < 0:
                return None
            out = (labels.astype(np.int8), crow, single.reshape(n, ns), bags)
        else:
            if len(set(keys)) != n or not self.index.keys().isdisjoint(keys):
                return None
            self.index.update(zip(keys, range(self.rows, self.rows + n), strict=True))
            out = (single.reshape(n, ns), bags)
        self.ignored.update(x.decode() for x in unknown)
        self.rows += n
        return out

    def _check(self, lines: list[bytes], unterminated: bool) -> list[tuple[int, str, str]]:
        problems, seen = [], set()
        for i, line in enumerate(lines):
            p = self._problem(line, seen)
            if p and unterminated and i == len(lines) - 1:
                p = ("truncated last line", f"no newline at end of file; {p[0]}")
            if p:
                problems.append((i, *p))
                if not self.skip:
                    break
        return problems

    def _problem(self, line: bytes, seen: set) -> tuple[str, str] | None:
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as e:
            return "not UTF-8", f"byte {line[e.start]:#04x} at column {e.start + 1}"
        cols = line.split(b",", self.ncols - 1)
        if len(cols) != self.ncols:
            return "wrong field count", f"{len(cols)} comma-separated fields, expected {self.ncols}"
        if self.skeleton:
            click, conv = cols[1], cols[2]
            if click not in (b"0", b"1") or conv not in (b"0", b"1"):
                return "label not 0/1", f"click {click.decode()!r}, conversion {conv.decode()!r}"
            if conv == b"1" and click == b"0":
                return "conversion without click", ""
        key, count, flist = cols[-3:]
        entries = flist.split(b"\x01") if flist else []
        if _num(int, count) != len(entries):
            return "feature_count mismatch", f"{count.decode()!r}, {len(entries)} entries"
        names = set()
        for k, entry in enumerate(entries, 1):
            a, b = entry.find(b"\x02"), entry.find(b"\x03")
            if entry.count(b"\x02") != 1 or entry.count(b"\x03") != 1 or not 0 < a < b:
                return "malformed feature entry", f"entry {k} is not field\\x02id\\x03value"
            name, fid, value = entry[:a], entry[a + 1 : b], entry[b + 1 :]
            if (i := _num(int, fid)) is None:
                return "non-integer id", f"entry {k}: feature id {fid.decode()!r}"
            if not -(2**63) < i < 2**63:  # an integer, but not one the int64 ids can hold
                return "id too large", f"entry {k}: feature id {fid.decode()!r} is beyond int64"
            if (x := _num(float, value)) is None or not abs(x) <= _F32_MAX:
                return "bad value", f"entry {k}: value {value.decode()!r} is not a finite float"
            if name in names:
                return f"field {name.decode()} repeated", "a single-valued field"
            names.update({name} & self.single_names)
        if self.skeleton and key not in self.index:
            return "unknown common_feature_index", f"{key.decode()!r} is not in the common file"
        if not self.skeleton and (key in self.index or key in seen):
            return "duplicate common_feature_index", repr(key.decode())
        seen.add(key)
        return None


def _read_chunks(path: Path, chunk_rows: int, hasher):
    """Yields (first line number, lines without newline, last line unterminated, bytes read)."""
    pending, tail, first, nread, since = [], b"", 1, 0, 0
    with path.open("rb") as f:
        while block := f.read(_BLOCK):
            hasher.update(block)
            nread, since = nread + len(block), since + len(block)
            pending += (tail + block if tail else block).split(b"\n")
            tail = pending.pop()
            while len(pending) >= chunk_rows or (pending and since >= _CHUNK_BYTES):
                take, pending = pending[:chunk_rows], pending[chunk_rows:]
                yield first, take, False, nread
                first, since = first + len(take), 0
    if tail or pending:
        yield first, [*pending, tail] if tail else pending, bool(tail), nread
