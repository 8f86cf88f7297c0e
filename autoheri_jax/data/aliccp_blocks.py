"""The fast path of the raw Ali-CCP parser: a block of whole lines parsed at once, as bytes.

Every token of a line is followed by exactly one delimiter (`,` between the leading columns, then
\\x02 \\x03 \\x01 through the feature_list, \\n at the end), so one pass over the block finds all
token boundaries, and the separator order of every line is checked against the pattern it must
follow. The tokens become one pyarrow binary array (offsets into the block), and ids, counts and
values are cast by pyarrow.compute; field names are mapped with index_in, keys joined with
index_in: no Python work per row or per feature.

parse_block only vouches for a block when every line is one the exact parser (aliccp_rows._Parser
._problem) accepts, with the same values: it is stricter where the two could read a token
differently (non-ASCII, a number with spaces, '+', '_' or hex, a comma in a feature_list: pyarrow
takes '0x5' as an int, Python does not), and returns None; the caller then bisects the block and
hands small pieces to the exact parser, which names or counts the bad lines. Floats: pyarrow's
string->double is correctly rounded, as is Python's float, so the float32 values agree.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

F32_MAX = float(np.finfo(np.float32).max)
_MISSING = np.iinfo(np.int64).min
_NL, _COMMA = 5, 4  # delimiter classes; \x01 \x02 \x03 keep their byte value
_CLASS = bytes(
    {10: _NL, 44: _COMMA, 1: 1, 2: 2, 3: 3}.get(b, 0) for b in range(256)
)  # bytes.translate, not a numpy lookup: one C pass
_NEXT_OK = np.zeros(64, bool)  # [8 * delimiter + the next one]: the order a valid block has
for _a, _b in [
    (_COMMA, _COMMA),
    (_COMMA, 2),
    (_COMMA, _NL),
    (2, 3),
    (3, 1),
    (3, _NL),
    (1, 2),
    (_NL, _COMMA),
]:
    _NEXT_OK[8 * _a + _b] = True
_INT_BYTES = np.zeros(256, bool)
_INT_BYTES[list(b"-0123456789")] = True
_FLOAT_BYTES = np.zeros(256, bool)
_FLOAT_BYTES[list(b"-+.eE0123456789")] = True  # no inf / nan / spaces: pyarrow and float agree


def read_blocks(path: Path, block_bytes: int, max_lines: int, hasher):
    """(first line number, bytes of whole lines, unterminated, bytes read) per block: at most
    max_lines lines and about block_bytes (a longer line makes a longer block); only the last
    block may lack its final newline (then unterminated is True)."""
    first, tail, nread = 1, b"", 0
    with path.open("rb") as f:
        while chunk := f.read(block_bytes):
            hasher.update(chunk)
            nread += len(chunk)
            buf = tail + chunk if tail else chunk
            cut = buf.rfind(b"\n") + 1
            buf, tail = (buf[:cut], buf[cut:]) if cut < len(buf) else (buf, b"")
            lines = buf.count(b"\n")
            if not lines:  # no newline read yet: the line goes on
                continue
            if lines <= max_lines:
                yield first, buf, False, nread
                first += lines
                continue
            ends = np.flatnonzero(np.frombuffer(buf, np.uint8) == 10)[max_lines - 1 :: max_lines]
            for a, b in zip(np.r_[0, ends + 1], np.r_[ends + 1, len(buf)], strict=True):
                if b > a:
                    yield first, buf[a:b], False, nread
                    first += min(max_lines, lines)
                    lines -= max_lines
    if tail:
        yield first, tail, True, nread


def split_half(buf: bytes) -> tuple[bytes, bytes]:
    """Two pieces of whole lines (the first ends in a newline, both non-empty: >= 2 lines)."""
    cut = buf.rfind(b"\n", 0, len(buf) // 2) + 1 or buf.find(b"\n") + 1
    return buf[:cut], buf[cut:]


def ints(col: pa.Array, lens: np.ndarray, max_len: int) -> np.ndarray | None:
    """int64 of tokens that are '-'? and digits (what int() and pyarrow read alike), else None."""
    if len(lens) and (lens.min() < 1 or lens.max() > max_len):
        return None
    if not _only(col, _INT_BYTES):
        return None
    try:
        return numpy(pc.cast(col, pa.int64()))
    except pa.ArrowInvalid:  # a misplaced '-', an overflow
        return None


def arrow(a: np.ndarray) -> pa.Array:
    """An int64 arrow array over a numpy array's memory (pa.array would import pandas)."""
    a = np.ascontiguousarray(a, np.int64)
    return pa.Array.from_buffers(pa.int64(), len(a), [None, pa.py_buffer(a)])


def binary(items: list[bytes]) -> pa.Array:
    """A large_binary array of byte strings (without pa.array: see `arrow`)."""
    off = np.zeros(len(items) + 1, np.int64)
    np.cumsum(np.fromiter(map(len, items), np.int64, len(items)), out=off[1:])
    data = pa.py_buffer(b"".join(items))
    return pa.LargeBinaryArray.from_buffers(
        pa.large_binary(), len(items), [None, pa.py_buffer(off), data]
    )


def numpy(col: pa.Array, null=None) -> np.ndarray:
    """A primitive arrow array's values (nulls -> `null`), read from its buffers (to_numpy
    would import pandas)."""
    vals = np.frombuffer(col.buffers()[1], col.type.to_pandas_dtype())
    vals = vals[col.offset : col.offset + len(col)]
    if not col.null_count:
        return vals
    valid = np.unpackbits(np.frombuffer(col.buffers()[0], np.uint8), bitorder="little")
    return np.where(valid[col.offset : col.offset + len(col)].astype(bool), vals, null)


def _only(col: pa.Array, allowed: np.ndarray) -> bool:
    """Whether every byte of a (large_binary) array's strings is `allowed` (one lookup table)."""
    off = np.frombuffer(col.buffers()[1], np.int64)[col.offset : col.offset + len(col) + 1]
    data = np.frombuffer(col.buffers()[2], np.uint8)[off[0] : off[-1]] if len(col) else []
    return bool(allowed[data].all()) if len(data) else True


def parse_block(p, buf: bytes):
    """The parsed columns of a block of n whole lines (each ending in a newline), as
    _Parser._fast returns them, or None unless every line is valid (module docstring).

    A skeleton block gives (labels int8 [n, 2], each line's common row [n], single fields'
    raw ids int64 [n, S] (int64 min where a line lacks the field), bags {field: (lengths [n],
    raw ids int64 [sum lengths], values float32 [same])}); a common block (single ids, bags).
    p is the _Parser: file kind, field codes, the common index (read, or extended for a common
    file), counters of ignored fields and accepted rows, which a parsed block updates."""
    if not buf.isascii():
        return None
    kind = np.frombuffer(buf.translate(_CLASS), np.uint8)
    d = np.flatnonzero(kind.view(bool))  # token i ends at d[i]; it starts after d[i - 1]
    kd, nd, h = kind[d], len(d), p.ncols - 1  # h: leading columns (each ending in a comma)
    if not nd or kd[0] != _COMMA or not _NEXT_OK[kd[:-1] * 8 + kd[1:]].all():
        return None
    nl = np.flatnonzero(kd == _NL)
    n = len(nl)
    st = np.empty(n, np.int64)  # each line's first token
    st[0], st[1:] = 0, nl[:-1] + 1
    # commas only open a line (_NEXT_OK): a line with h of them has them at st .. st + h - 1
    if (nl - st < h).any() or any((kd[st + c] != _COMMA).any() for c in range(h)):
        return None
    lens = np.diff(d, prepend=-1) - 1  # token i is buf[d[i] - lens[i]:d[i]]
    flat = st + h  # each line's first feature_list token: a name, or the whole of an empty list
    empty = kd[flat] == _NL
    if (lens[flat[empty]] != 0).any() or (kd[flat[~empty]] == _COMMA).any():
        return None  # a feature_list without separators, or more than h commas
    # zero copy: element 2i is token i, element 2i + 1 its delimiter
    off = np.empty(2 * nd + 1, np.int64)
    off[0], off[1::2], off[2::2] = 0, d, d + 1
    tok = pa.LargeBinaryArray.from_buffers(
        pa.large_binary(), 2 * nd, [None, pa.py_buffer(off), pa.py_buffer(buf)]
    )

    def take(idx):
        return tok.take(arrow(2 * idx))

    ni = np.flatnonzero(kd == 2)  # every entry's name token; its id and value follow
    per_row = np.diff(np.searchsorted(ni, nl), prepend=0)
    rows = np.repeat(np.arange(n), per_row)
    count = ints(take(st + h - 1), lens[st + h - 1], 19)
    ids = ints(take(ni + 1), lens[ni + 1], 19)
    if count is None or ids is None or not np.array_equal(count, per_row):
        return None
    if (ids == _MISSING).any() or (lens[ni] < 1).any() or (lens[ni + 2] < 1).any():
        return None
    vcol = take(ni + 2)
    if not _only(vcol, _FLOAT_BYTES):
        return None
    try:
        vals = numpy(pc.cast(vcol, pa.float64()))
    except pa.ArrowInvalid:
        return None
    if not (np.abs(vals) <= F32_MAX).all():  # also false for NaN
        return None
    names = take(ni)
    field = numpy(pc.index_in(names, value_set=p.code_names), -1)
    ns = len(p.singles)
    sm = (field >= 0) & (field < ns)
    key = rows[sm] * ns + field[sm]
    if key.size and np.bincount(key, minlength=n * ns).max() > 1:
        return None  # a single-valued field repeated
    keys = take(st + h - 2)
    if p.skeleton:
        a = np.frombuffer(buf, np.uint8)
        if (lens[st + 1] != 1).any() or (lens[st + 2] != 1).any():
            return None
        labels = np.stack([a[d[st + 1] - 1], a[d[st + 2] - 1]], 1) - 48  # other bytes wrap > 1
        crow = pc.index_in(keys, value_set=p.key_array())
        if labels.max() > 1 or (labels[:, 1] > labels[:, 0]).any() or crow.null_count:
            return None
        crow = p.key_rows()[numpy(crow)]
    elif pc.count_distinct(keys).as_py() != n:
        return None
    else:
        new = keys.to_pylist()
        if not p.index.keys().isdisjoint(new):
            return None
        p.index.update(zip(new, range(p.rows, p.rows + n), strict=True))
    single = np.full(n * ns, _MISSING, np.int64)
    single[key] = ids[sm]
    vals = vals.astype(np.float32)
    bags = {}
    for b, name in enumerate(p.bags):
        mb = field == ns + b
        bags[name] = (np.bincount(rows[mb], minlength=n), ids[mb], vals[mb])
    if (field < 0).any():
        for s in pc.value_counts(names.take(arrow(np.flatnonzero(field < 0)))).to_pylist():
            p.ignored[s["values"].decode()] += s["counts"]
    p.rows += n
    if p.skeleton:
        return labels.astype(np.int8), crow, single.reshape(n, ns), bags
    return single.reshape(n, ns), bags
