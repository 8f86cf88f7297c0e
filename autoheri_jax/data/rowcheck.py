"""The exact per-row parser and bad-row checks of the processed formats (formats.py).

This is the reference: every row it accepts is parsed here exactly as the store holds it, and
every row it refuses is named (`FILE:LINE: reason`) or counted per reason. The fast paths
(csv_blocks.py, esmm_blocks.py) hand a block here whenever they cannot vouch for every row, so
error messages and skip counts come from this code alone, whichever engine runs.

The fixed-column layouts (LAYOUTS) and a file's first line (data_start, esmm_labelled: where
the data starts, whether the file has its label columns) live here too, so both engines read a
header, and decide that a file is label-free, by the same code.
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from pathlib import Path
from typing import NamedTuple

import numpy as np

from autoheri_jax.data import csv_blocks, esmm_blocks
from autoheri_jax.data.errors import DataFormatError

STAGES = ["click", "conversion"]
LABEL_TOKENS = ("0", "1", "0.0", "1.0")
CHUNK = 1 << 16  # rows parsed at a time (bounds the string arrays of the CSV formats)
_ID_DIGITS = 18  # significant digits of a raw id (int64 holds any 18-digit value)
_SURROGATE = re.compile("[\udc80-\udcff]")  # bytes that were not UTF-8, kept by surrogateescape
_BOM = "\ufeff".encode()
_CP = ["click", "purchase"]
_ALICCP = ["101", "121", "122", "124", "125", "126", "127", "128", "129", "205", "206", "207"]
_RECHUB_SPARSE = [*_ALICCP, "210", "216", "508", "509", "702", "853", "301"]
_RECHUB_SPARSE += ["109_14", "110_14", "127_14", "150_14"]
_RECHUB_DENSE = ["D109_14", "D110_14", "D127_14", "D150_14", "D508", "D509", "D702", "D853"]
_AITM_SPARSE = [*_ALICCP, "216", "508", "509", "702", "853", "301"]
_AX_SPARSE = [f"categorical_{i}" for i in range(1, 17)]
_AX_DENSE = [f"numerical_{i}" for i in range(1, 64)]


class Layout(NamedTuple):
    """A fixed-column CSV format: its header and which columns hold what."""

    header: list[str]
    labels: list[str]
    sparse: list[str]
    dense: list[str]
    header_required: bool = True

    def cols(self, names) -> list[int]:
        """The header positions of the columns `names`."""
        return [self.header.index(n) for n in names]

    def unlabeled(self) -> Layout:
        """The layout of a label-free file of this format (scoring only)."""
        return self._replace(header=[c for c in self.header if c not in self.labels], labels=[])


_AX_HEADER = ["search_id", *_AX_SPARSE, *_AX_DENSE, *STAGES]
LAYOUTS = {
    "rechub_aliccp": Layout(
        [*_CP, *_RECHUB_SPARSE, *_RECHUB_DENSE], _CP, _RECHUB_SPARSE, _RECHUB_DENSE
    ),
    "paddle_aitm": Layout([*_CP, *_AITM_SPARSE], _CP, _AITM_SPARSE, [], header_required=False),
    "aliexpress": Layout(_AX_HEADER, STAGES, _AX_SPARSE, _AX_DENSE),
}


def data_start(path: Path, fmt: str) -> tuple[int, int, bool, Layout]:
    """(byte offset, line number) of the first data line, whether a header precedes it, and
    the file's layout: the format's, or its label-free one when the header lacks every label
    (headerless: when the first line has the label-free field count). The first non-blank
    line (split_lines's notion) is the header if it is one, else the first data line;
    a header that is not the format's (with or without labels) is refused, naming columns."""
    lay = LAYOUTS[fmt]
    bare = lay.unlabeled()
    try:
        f = path.open("rb")
    except OSError as e:
        raise csv_blocks.open_error(path, e) from e
    pos = 0
    with f:
        for lineno, raw in enumerate(f, 1):
            text = raw.decode("utf-8", "surrogateescape").removesuffix("\n")
            text = (text.removeprefix("\ufeff") if lineno == 1 else text).removesuffix("\r")
            if text.strip() or _SURROGATE.search(text):
                toks = text.strip().split(",")
                for found in (lay, bare):
                    if toks == found.header:
                        return pos + len(raw), lineno + 1, True, found
                if lay.header_required or csv_blocks.header_like(toks, lay.header):
                    why = csv_blocks.header_mismatch(toks, lay.header, lay.labels)
                    raise DataFormatError(
                        path, lineno, "unexpected header", f"expected the {fmt} header: {why}"
                    )
                start = pos + (len(_BOM) if pos == 0 and raw.startswith(_BOM) else 0)
                return start, lineno, False, bare if len(toks) == len(bare.header) else lay
            pos += len(raw)
    raise DataFormatError(path, None, "empty file")


def esmm_labelled(path: Path) -> bool:
    """Whether an ESMM file has labels: its first line's second field is not a field:id token."""
    try:
        with path.open("rb") as f:
            line = next((raw for raw in f if raw.strip()), b"")
    except OSError as e:
        raise csv_blocks.open_error(path, e) from e
    toks = line.split(b",")
    return not (len(toks) > 1 and b":" in toks[1])


class BadRows:
    """Strict: raise at the first bad row. Skip: drop bad rows and count them per reason."""

    def __init__(self, mode: str):
        self.mode, self.counts = mode, Counter()

    def resolve(self, path: Path, lines: np.ndarray, checks: list, open_last: int | None):
        """[n] bool mask of the good rows among n parsed rows of `path`.

        lines [n]: each row's line number; checks: (reason, [n] bad-row mask, row -> detail or
        None), in priority order; open_last: the line number of an unterminated last line (or
        None). Strict raises DataFormatError at the first bad row; skip counts each bad row
        under its first reason (an unterminated bad last row as "truncated last line")."""
        first = np.full(len(lines), -1)
        for k, (_, mask, _) in enumerate(checks):
            first[(first < 0) & mask] = k
        bad = first >= 0
        truncated = bool(len(lines)) and bad[-1] and lines[-1] == open_last
        if self.mode == "strict" and bad.any():
            i = int(np.argmax(bad))
            reason, _, detail = checks[first[i]]
            detail = detail(i) if detail else ""
            if truncated and i == len(lines) - 1:  # most likely a cut-off file: say so first
                detail = f"no newline at end of file, and {reason}" + (
                    f" ({detail})" * bool(detail)
                )
                reason = "truncated last line"
            raise DataFormatError(path, int(lines[i]), reason, detail)
        if truncated:
            first[-1] = len(checks)
        reasons = [c[0] for c in checks] + ["truncated last line"]
        for k, n in zip(*np.unique(first[bad], return_counts=True), strict=True):
            self.counts[reasons[k]] += int(n)
        return ~bad


def read_bytes(path: Path) -> bytes:
    """The file's bytes; DataFormatError when it is missing, unreadable or blank."""
    if not path.exists():
        raise DataFormatError(path, None, "no such file or directory")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DataFormatError(path, None, "cannot read", str(e.strerror)) from e
    if not data.strip():
        raise DataFormatError(path, None, "empty file")
    return data


def split_lines(data: bytes, first_line: int = 1, at_start: bool = True):
    """Non-blank lines of a file (or of a part of one starting at line first_line): (texts,
    1-based line numbers, non-UTF-8 mask, line number of an unterminated last line or None)."""
    text = data.decode("utf-8", "surrogateescape")
    if at_start:
        text = text.removeprefix("\ufeff")
    texts = text.split("\n")
    open_last = None if data.endswith(b"\n") else first_line + len(texts) - 1
    if open_last is None:
        texts.pop()
    utf8_bad = np.zeros(len(texts), bool)
    if _SURROGATE.search(text):
        utf8_bad = np.array([_SURROGATE.search(t) is not None for t in texts])
    texts = [t.removesuffix("\r") for t in texts]
    keep = [i for i, t in enumerate(texts) if utf8_bad[i] or t.strip()]
    lines = np.array(keep, np.int64) + first_line
    return [texts[i] for i in keep], lines, utf8_bad[keep], open_last


def int_cells(a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """int64 values, ok mask and too-large mask of a string array. ok: optional '-' then digits,
    at most 18 of them after leading zeros (every such value fits the int64 raw ids; a 19th
    digit may not). too large: such an integer with more digits, named apart from non-integer
    cells so that 2**63 - 1 reads as the integer it is."""
    body = np.strings.lstrip(a, "-")
    integer = np.strings.isdecimal(body) & (np.strings.find(a, "-") <= 0)
    integer &= np.strings.count(a, "-") <= 1
    fits = np.strings.str_len(np.strings.lstrip(body, "0")) <= _ID_DIGITS
    ok = integer & fits
    return np.where(ok, a, "0").astype(np.int64), ok, integer & ~fits


def _float_cells(a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """float32 values (the stored dtype), numeric mask (finite as parsed) and fits mask (still
    finite in float32: 1e39 parses as a finite float64 but would be stored as inf)."""

    def to_float(s: str) -> float:
        try:
            return float(s)
        except ValueError:
            return np.nan

    try:
        v = a.astype(np.float64)
    except ValueError:  # locate the bad cells (only when a chunk has some)
        v = np.array([[to_float(s) for s in row] for row in a], np.float64).reshape(a.shape)
    with np.errstate(over="ignore"):
        v32 = v.astype(np.float32)
    numeric = np.isfinite(v)
    return v32, numeric, ~numeric | np.isfinite(v32)


_TOO_LARGE = f": more than {_ID_DIGITS} digits, beyond the 64-bit integer ids"
_BEYOND_F32 = ": not finite as float32, the stored dtype (|x| <= 3.4e38)"


def _cells(reason: str, ok: np.ndarray, values: np.ndarray, names, why: str = "") -> tuple:
    """A check on a [n, C] block of cells: a row is bad if any cell is; names the first one."""

    def detail(i: int) -> str:
        j = int(np.argmax(~ok[i]))
        return f"{str(values[i, j])!r} in column {names[j]}{why}"

    return reason, ~ok.all(1), detail


def labels(lab: np.ndarray) -> tuple[np.ndarray, list]:
    """int8 [n, 2] labels of a [n, 2] string block, and their checks."""
    y = np.isin(lab, ("1", "1.0")).astype(np.int8)
    hint = (
        "click=0 but conversion=1 (`--on-bad-row skip`, or data.on_bad_row=skip in a config, "
        "drops such rows; labels are never changed)"
    )
    conv = ("conversion without click", y[:, 1] > y[:, 0], lambda i: hint)
    return y, [_cells("label not 0/1", np.isin(lab, LABEL_TOKENS), lab, STAGES), conv]


def fixed_chunk(lay, texts: list[str]) -> tuple[tuple, list]:
    """((labels int8 [n, 2], raw ids int64 [n, F], dense float32 [n, Dd]), their checks as
    `BadRows.resolve` takes them) of n lines `texts` of the fixed-column layout `lay`."""
    rows = [t.split(",") for t in texts]
    ncol, width = np.array([len(r) for r in rows]), len(lay.header)
    wrong, filler = ncol != width, ["0"] * width
    block = np.array([filler if w else r for r, w in zip(rows, wrong, strict=True)], dtype=str)
    if lay.labels:
        y, label_checks = labels(block[:, lay.cols(lay.labels)])
    else:  # a label-free layout (scoring only): zero labels, never read, nothing to check
        y, label_checks = np.zeros((len(rows), 2), np.int8), []
    ids, id_ok, id_big = int_cells(sp := block[:, lay.cols(lay.sparse)])
    dense, dense_ok, dense_fits = _float_cells(de := block[:, lay.cols(lay.dense)])
    checks = [
        ("wrong field count", wrong, lambda i: f"{ncol[i]} fields, expected {width}"),
        *label_checks[:1],
        _cells("non-integer id", id_ok | id_big, sp, lay.sparse),
        _cells("id too large", ~id_big, sp, lay.sparse, _TOO_LARGE),
        _cells("non-numeric dense value", dense_ok, de, lay.dense),
        _cells("dense value beyond float32", dense_fits, de, lay.dense, _BEYOND_F32),
        *label_checks[1:],
    ]
    return (y, ids, dense), checks


def fixed_rows(path: Path, lay, texts, lines, utf8_bad, open_last, bad: BadRows) -> list:
    """Parsed good rows of some lines, as [labels, raw ids, dense] parts (`fixed_chunk`'s
    arrays, from CHUNK lines each); `bad` drops or raises at the bad rows."""
    parts = []
    for s in range(0, len(texts), CHUNK):
        cols, checks = fixed_chunk(lay, texts[s : s + CHUNK])
        checks.insert(0, ("non-UTF-8 bytes", utf8_bad[s : s + CHUNK], None))
        ok = bad.resolve(path, lines[s : s + CHUNK], checks, open_last)
        parts.append([c[ok] for c in cols])
    return parts


def _field_index(names: np.ndarray, inv: np.ndarray, schema: tuple[list, list]) -> np.ndarray:
    """Per token: its position in schema single + bag fields, -1 for a field not in the schema."""
    pos = {f: k for k, f in enumerate(schema[0] + schema[1])}
    return np.array([pos.get(str(x), -1) for x in names], np.int64)[inv]


def _esmm_tokens(texts: list[str], utf8_bad: np.ndarray, labelled: bool = True):
    """The rows of ESMM lines as (labels, per-row token counts, field names, row of each token,
    raw ids, checks): the per-row reference parse. labelled False: "sample_id,field:id,..."
    lines (scoring only), whose labels are zeros."""
    rows = [t.split(",") for t in texts]
    n, ncol = len(rows), np.array([len(r) for r in rows])
    head = 3 if labelled else 1  # sample_id (and click, conversion) before the features
    short = ncol < head
    if labelled:
        lab = [("0", "0") if s else r[1:3] for r, s in zip(rows, short, strict=True)]
        y, label_checks = labels(np.array(lab, dtype=str).reshape(n, 2))
    else:
        y, label_checks = np.zeros((n, 2), np.int8), []
    feats = itertools.chain.from_iterable(
        r[head:] for r, s in zip(rows, short, strict=True) if not s
    )
    toks = np.array(list(feats), dtype=str)
    fld, sep, id_s = np.strings.partition(toks, ":")
    row_of = np.repeat(np.arange(n), np.where(short, 0, ncol - head))
    ids, id_ok, id_big = int_cells(id_s)
    malformed = (sep != ":") | (fld == "")

    def by_row(reason: str, tok_bad: np.ndarray, why: str = "") -> tuple:
        def detail(i: int) -> str:
            return repr(str(toks[np.flatnonzero(tok_bad & (row_of == i))[0]])) + why

        return reason, np.bincount(row_of, weights=tok_bad, minlength=n) > 0, detail

    checks = [
        ("non-UTF-8 bytes", utf8_bad, None),
        ("wrong field count", short, lambda i: f"{ncol[i]} fields, expected >= 3"),
        *label_checks[:1],
        by_row("malformed field:id token", malformed),
        by_row("non-integer id", ~id_ok & ~id_big & ~malformed),
        by_row("id too large", id_big & ~malformed, _TOO_LARGE),
        *label_checks[1:],
    ]
    return y, fld, row_of, ids, checks


def _esmm_exact(
    path: Path, data: bytes, first: int, at_start: bool, bad: BadRows, schema, labelled: bool = True
):
    """(labels, field names, per token: name index / row / raw id, ok rows) of some lines, every
    line through _esmm_tokens; bad rows are resolved here (strict: the first one raises)."""
    texts, lines, utf8_bad, open_last = split_lines(data, first, at_start)
    if not texts:  # blank lines only (a block of them, or a whitespace-only file)
        z = np.zeros(0, np.int64)
        return np.zeros((0, 2), np.int8), [], z, z, z, np.zeros(0, bool)
    y, fld, row_of, ids, checks = _esmm_tokens(texts, utf8_bad, labelled)
    n = len(texts)
    names, inv = np.unique(fld, return_inverse=True)
    if schema is not None:
        fidx, nf = _field_index(names, inv, schema), max(len(schema[0]), 1)
        single = (fidx >= 0) & (fidx < len(schema[0]))
        u, c = np.unique(row_of[single] * nf + fidx[single], return_counts=True)
        dup = np.full(n, -1)
        dup[u[c > 1] // nf] = u[c > 1] % nf
        checks.append(("repeated single-valued field", dup >= 0, lambda i: schema[0][dup[i]]))
    ok = bad.resolve(path, lines, checks, open_last)
    return y, [str(x) for x in names], inv.reshape(-1), row_of, ids, ok


def _esmm_parts(path: Path, bad: BadRows, schema, engine: str, labelled: bool = True):
    """Per piece of the file, _esmm_exact's tuple: the whole file at once (engine "python", the
    reference), or blocks of whole lines, each through esmm_blocks when it vouches for it."""
    if engine == "python":
        yield _esmm_exact(path, read_bytes(path), 1, True, bad, schema, labelled)
        return
    if not path.exists():
        raise DataFormatError(path, None, "no such file or directory")
    blank = True
    for first, block, _ in csv_blocks.read_blocks(path, 0, 1):
        blank = blank and not block.strip()
        fast = esmm_blocks.esmm_block(block, first == 1, schema and schema[0], labelled)
        if fast is None:
            yield _esmm_exact(path, block, first, first == 1, bad, schema, labelled)
        else:
            yield *fast, np.ones(len(fast[0]), bool)
    if blank:  # read_bytes's test, made while streaming
        raise DataFormatError(path, None, "empty file")


def parse_esmm(
    path: Path,
    bad: BadRows,
    schema: tuple[list, list] | None,
    engine="python",
    labelled: bool = True,
):
    """((labels int8 [m, 2], raw ids int64 [m, S], present bool [m, S], bags {field:
    (lengths [m], raw ids)}) of the m good rows of an ESMM file, the schema (S single fields,
    bag fields)); schema None: derive it (train). engine: see _esmm_parts (the result is the same).
    labelled False: label-free lines (see _esmm_tokens)."""
    parts = list(_esmm_parts(path, bad, schema, engine, labelled))
    names = sorted({f for p in parts for f in p[1]})  # np.unique's order over the whole file
    pos = {f: k for k, f in enumerate(names)}
    y, ok = np.concatenate([p[0] for p in parts]), np.concatenate([p[5] for p in parts])
    inv = np.concatenate([np.array([pos[f] for f in p[1]], np.int64)[p[2]] for p in parts])
    starts = np.cumsum([0] + [len(p[0]) for p in parts])
    row_of = np.concatenate([p[3] + s for p, s in zip(parts, starts, strict=False)])
    ids = np.concatenate([p[4] for p in parts])
    names = np.array(names, dtype=str)
    keep = ok[row_of]
    if schema is None:
        nn = max(len(names), 1)
        u, c = np.unique(row_of[keep] * nn + inv[keep], return_counts=True)
        seen, multi = np.zeros(len(names), bool), np.zeros(len(names), bool)
        seen[u % nn], multi[u[c > 1] % nn] = True, True
        schema = ([str(x) for x in names[seen & ~multi]], [str(x) for x in names[multi]])
    fidx = _field_index(names, inv, schema)
    nf, m, r = len(schema[0]), int(ok.sum()), (np.cumsum(ok) - 1)[row_of]
    sel = keep & (fidx >= 0) & (fidx < nf)
    sparse, present = np.zeros((m, nf), np.int64), np.zeros((m, nf), bool)
    sparse[r[sel], fidx[sel]], present[r[sel], fidx[sel]] = ids[sel], True
    bags = {}
    for k, b in enumerate(schema[1]):
        sel = keep & (fidx == nf + k)
        bags[b] = (np.bincount(r[sel], minlength=m), ids[sel])
    return (y[ok], sparse, present, bags), schema
