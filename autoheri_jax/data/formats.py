"""Readers for the processed Ali-CCP / AliExpress files other projects publish, into the store.

  rechub_aliccp  torch-rechub Ali-CCP CSV: header click,purchase, 23 sparse ids, 8 dense D* floats
  paddle_aitm    PaddleRec AITM CSV: click,purchase + 18 sparse ids; the header line is optional
  paddle_esmm    PaddleRec ESMM lines "sample_id,click,conversion,field:id,...": a field repeated
                 within any train row becomes a bag field (values 1.0); every token is kept
  aliexpress     MTReclib / AliExpress CSV: search_id (dropped), 16 categorical, 63 numerical,
                 click, conversion

Vocabularies are built on the train split only (ids seen < min_count times, or unseen, map to 0)
and applied unchanged to valid / test. Bad rows raise a DataFormatError naming file and line
(on_bad_row="strict") or are skipped and counted per reason ("skip"). PaddleRec's AITM demo data
has rows with purchase=1 and click=0: convert it with on_bad_row="skip" (labels are never changed).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import re
import sys
from collections import Counter
from pathlib import Path
from typing import NamedTuple

import numpy as np

from autoheri_jax.data import store
from autoheri_jax.data.errors import DataFormatError
from autoheri_jax.data.vocab import apply_vocabulary, build_vocabulary, save_vocabularies

FORMATS = ("rechub_aliccp", "paddle_aitm", "paddle_esmm", "aliexpress")
STAGES = ["click", "conversion"]
_CP = ["click", "purchase"]
_ALICCP = ["101", "121", "122", "124", "125", "126", "127", "128", "129", "205", "206", "207"]
_RECHUB_SPARSE = [*_ALICCP, "210", "216", "508", "509", "702", "853", "301"]
_RECHUB_SPARSE += ["109_14", "110_14", "127_14", "150_14"]
_RECHUB_DENSE = ["D109_14", "D110_14", "D127_14", "D150_14", "D508", "D509", "D702", "D853"]
_AITM_SPARSE = [*_ALICCP, "216", "508", "509", "702", "853", "301"]
_AX_SPARSE = [f"categorical_{i}" for i in range(1, 17)]
_AX_DENSE = [f"numerical_{i}" for i in range(1, 64)]
_LABEL_TOKENS = ("0", "1", "0.0", "1.0")
_CHUNK = 1 << 16  # rows parsed at a time (bounds the string arrays of the CSV formats)
_NOT_DATA = {".md", ".json", ".yaml", ".yml", ".py", ".sh", ".npy", ".npz"}
_STORE_ENTRIES = {"train", "valid", "test", "vocab", "manifest.json.tmp"}
_INT = re.compile(r"-?\d+")
_TOKEN = re.compile(r"[^:]+:-?\d+")
_SURROGATE = re.compile("[\udc80-\udcff]")  # bytes that were not UTF-8, kept by surrogateescape
_SPLIT_KEYS = (("train", "train"), ("valid", "val"), ("test", "test"))


class _Layout(NamedTuple):
    """A fixed-column CSV format: its header and which columns hold what."""

    header: list[str]
    labels: list[str]
    sparse: list[str]
    dense: list[str]
    header_required: bool = True

    def cols(self, names) -> list[int]:
        return [self.header.index(n) for n in names]


_AX_HEADER = ["search_id", *_AX_SPARSE, *_AX_DENSE, *STAGES]
_LAYOUTS = {
    "rechub_aliccp": _Layout(
        [*_CP, *_RECHUB_SPARSE, *_RECHUB_DENSE], _CP, _RECHUB_SPARSE, _RECHUB_DENSE
    ),
    "paddle_aitm": _Layout([*_CP, *_AITM_SPARSE], _CP, _AITM_SPARSE, [], header_required=False),
    "aliexpress": _Layout(_AX_HEADER, STAGES, _AX_SPARSE, _AX_DENSE),
}


@dataclasses.dataclass
class _Table:
    """Parsed rows of one file: raw (unmapped) ids."""

    labels: np.ndarray  # int8 [n, 2]
    sparse: np.ndarray  # int64 [n, F]
    present: np.ndarray | None  # bool [n, F]: paddle_esmm rows may lack a field (-> id 0)
    dense: np.ndarray  # float32 [n, D]
    bags: dict[str, tuple[np.ndarray, np.ndarray]]  # field -> (lengths [n], raw ids [nnz])

    def column(self, j: int) -> np.ndarray:
        """Raw ids of single field j in the rows that have it."""
        return self.sparse[:, j] if self.present is None else self.sparse[self.present[:, j], j]

    def take(self, idx: np.ndarray) -> _Table:
        bags = {}
        for b, (lens, ids) in self.bags.items():
            starts, sub = np.cumsum(lens) - lens, lens[idx]
            pos = np.repeat(starts[idx] - (np.cumsum(sub) - sub), sub) + np.arange(sub.sum())
            bags[b] = (sub, ids[pos])
        present = None if self.present is None else self.present[idx]
        return _Table(self.labels[idx], self.sparse[idx], present, self.dense[idx], bags)


class _BadRows:
    """Strict: raise at the first bad row. Skip: drop bad rows and count them per reason."""

    def __init__(self, mode: str):
        self.mode, self.counts = mode, Counter()

    def resolve(self, path: Path, lines: np.ndarray, checks: list, open_last: int | None):
        """checks: (reason, bad-row mask, row -> detail or None), in priority order; -> ok mask."""
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


def _read_bytes(path: Path) -> bytes:
    if not path.exists():
        raise DataFormatError(path, None, "no such file or directory")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DataFormatError(path, None, "cannot read", str(e.strerror)) from e
    if not data.strip():
        raise DataFormatError(path, None, "empty file")
    return data


def _read_lines(path: Path):
    """Non-blank lines: (texts, 1-based line numbers, non-UTF-8 mask, unterminated last line)."""
    data = _read_bytes(path)
    text = data.decode("utf-8", "surrogateescape").removeprefix("\ufeff")
    texts = text.split("\n")
    open_last = None if data.endswith(b"\n") else len(texts)  # its 1-based line number
    if open_last is None:
        texts.pop()
    utf8_bad = np.zeros(len(texts), bool)
    if _SURROGATE.search(text):
        utf8_bad = np.array([_SURROGATE.search(t) is not None for t in texts])
    texts = [t.removesuffix("\r") for t in texts]
    keep = [i for i, t in enumerate(texts) if utf8_bad[i] or t.strip()]
    return [texts[i] for i in keep], np.array(keep, np.int64) + 1, utf8_bad[keep], open_last


def _int_cells(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int64 values and ok mask of a string array (ok: optional '-' then 1..18 digits)."""
    body = np.strings.lstrip(a, "-")
    ok = np.strings.isdecimal(body) & (np.strings.str_len(body) <= 18)
    ok &= np.strings.find(a, "-") <= 0
    ok &= np.strings.count(a, "-") <= 1
    return np.where(ok, a, "0").astype(np.int64), ok


def _float_cells(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    def to_float(s: str) -> float:
        try:
            return float(s)
        except ValueError:
            return np.nan

    try:
        v = a.astype(np.float64)
    except ValueError:  # locate the bad cells (only when a chunk has some)
        v = np.array([[to_float(s) for s in row] for row in a], np.float64).reshape(a.shape)
    return v, np.isfinite(v)


def _cells(reason: str, ok: np.ndarray, values: np.ndarray, names) -> tuple:
    """A check on a [n, C] block of cells: a row is bad if any cell is; names the first one."""

    def detail(i: int) -> str:
        j = int(np.argmax(~ok[i]))
        return f"{str(values[i, j])!r} in column {names[j]}"

    return reason, ~ok.all(1), detail


def _labels(lab: np.ndarray) -> tuple[np.ndarray, list]:
    """int8 [n, 2] labels of a [n, 2] string block, and their checks."""
    y = np.isin(lab, ("1", "1.0")).astype(np.int8)
    hint = "click=0 but conversion=1 (on_bad_row='skip' drops such rows; labels are never changed)"
    conv = ("conversion without click", y[:, 1] > y[:, 0], lambda i: hint)
    return y, [_cells("label not 0/1", np.isin(lab, _LABEL_TOKENS), lab, STAGES), conv]


def _fixed_chunk(lay: _Layout, texts: list[str]) -> tuple[tuple, list]:
    rows = [t.split(",") for t in texts]
    ncol, width = np.array([len(r) for r in rows]), len(lay.header)
    wrong, filler = ncol != width, ["0"] * width
    block = np.array([filler if w else r for r, w in zip(rows, wrong, strict=True)], dtype=str)
    y, label_checks = _labels(block[:, lay.cols(lay.labels)])
    ids, id_ok = _int_cells(sp := block[:, lay.cols(lay.sparse)])
    dense, dense_ok = _float_cells(de := block[:, lay.cols(lay.dense)])
    checks = [
        ("wrong field count", wrong, lambda i: f"{ncol[i]} fields, expected {width}"),
        label_checks[0],
        _cells("non-integer id", id_ok, sp, lay.sparse),
        _cells("non-numeric dense value", dense_ok, de, lay.dense),
        label_checks[1],
    ]
    return (y, ids, dense.astype(np.float32)), checks


def _parse_fixed(path: Path, fmt: str, bad: _BadRows) -> _Table:
    lay = _LAYOUTS[fmt]
    texts, lines, utf8_bad, open_last = _read_lines(path)
    header = ",".join(lay.header)
    if texts[0].strip() == header:
        texts, lines, utf8_bad = texts[1:], lines[1:], utf8_bad[1:]
    elif lay.header_required:
        got = f"expected the {fmt} header {header[:50]!r}..., got {texts[0][:50]!r}"
        raise DataFormatError(path, int(lines[0]), "unexpected header", got)
    if not texts:
        raise DataFormatError(path, None, "no data rows")
    parts = []
    for s in range(0, len(texts), _CHUNK):
        cols, checks = _fixed_chunk(lay, texts[s : s + _CHUNK])
        checks.insert(0, ("non-UTF-8 bytes", utf8_bad[s : s + _CHUNK], None))
        ok = bad.resolve(path, lines[s : s + _CHUNK], checks, open_last)
        parts.append([c[ok] for c in cols])
    y, ids, dense = (np.concatenate(p) for p in zip(*parts, strict=True))
    return _Table(y, ids, None, dense, {})


def _field_index(names: np.ndarray, inv: np.ndarray, schema: tuple[list, list]) -> np.ndarray:
    """Per token: its position in schema single + bag fields, -1 for a field not in the schema."""
    pos = {f: k for k, f in enumerate(schema[0] + schema[1])}
    return np.array([pos.get(str(x), -1) for x in names], np.int64)[inv]


def _parse_esmm(path: Path, bad: _BadRows, schema: tuple[list, list] | None):
    """The table and the schema (single fields, bag fields); schema None: derive it (train)."""
    texts, lines, utf8_bad, open_last = _read_lines(path)
    rows = [t.split(",") for t in texts]
    n, ncol = len(rows), np.array([len(r) for r in rows])
    short = ncol < 3
    lab = [("0", "0") if s else r[1:3] for r, s in zip(rows, short, strict=True)]
    y, label_checks = _labels(np.array(lab, dtype=str).reshape(n, 2))
    feats = itertools.chain.from_iterable(r[3:] for r, s in zip(rows, short, strict=True) if not s)
    toks = np.array(list(feats), dtype=str)
    fld, sep, id_s = np.strings.partition(toks, ":")
    row_of = np.repeat(np.arange(n), np.where(short, 0, ncol - 3))
    ids, id_ok = _int_cells(id_s)
    names, inv = np.unique(fld, return_inverse=True)
    malformed = (sep != ":") | (fld == "")

    def by_row(reason: str, tok_bad: np.ndarray) -> tuple:
        def detail(i: int) -> str:
            return repr(str(toks[np.flatnonzero(tok_bad & (row_of == i))[0]]))

        return reason, np.bincount(row_of, weights=tok_bad, minlength=n) > 0, detail

    checks = [
        ("non-UTF-8 bytes", utf8_bad, None),
        ("wrong field count", short, lambda i: f"{ncol[i]} fields, expected >= 3"),
        label_checks[0],
        by_row("malformed field:id token", malformed),
        by_row("non-integer id", ~id_ok & ~malformed),
        label_checks[1],
    ]
    if schema is not None:
        fidx, nf = _field_index(names, inv, schema), max(len(schema[0]), 1)
        single = (fidx >= 0) & (fidx < len(schema[0]))
        u, c = np.unique(row_of[single] * nf + fidx[single], return_counts=True)
        dup = np.full(n, -1)
        dup[u[c > 1] // nf] = u[c > 1] % nf
        checks.append(("repeated single-valued field", dup >= 0, lambda i: schema[0][dup[i]]))
    ok = bad.resolve(path, lines, checks, open_last)
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
    return _Table(y[ok], sparse, present, np.zeros((m, 0), np.float32), bags), schema


def _first_line(path: Path) -> str:
    if not path.is_file():
        raise DataFormatError(path, None, "no such file or directory")
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            try:
                text = raw.decode("utf-8").strip().removeprefix("\ufeff")
            except UnicodeDecodeError:
                raise DataFormatError(path, lineno, "non-UTF-8 bytes") from None
            if text:
                return text
    raise DataFormatError(path, None, "empty file")


def detect_format(path: str | Path) -> str:
    """The format of a file (a directory: of its train file), from its header / first line."""
    path = Path(path)
    if path.is_dir():
        path = find_split_files(path)["train"]
    line = _first_line(path)
    toks = line.split(",")
    found = [f for f, lay in _LAYOUTS.items() if line == ",".join(lay.header)]
    if len(toks) == len(_LAYOUTS["paddle_aitm"].header) and all(_INT.fullmatch(t) for t in toks):
        found.append("paddle_aitm")
    esmm_labels = all(_INT.fullmatch(t) for t in toks[1:3])
    if len(toks) > 3 and esmm_labels and all(_TOKEN.fullmatch(t) for t in toks[3:]):
        found.append("paddle_esmm")
    if len(found) != 1:
        what = f"ambiguous format ({' or '.join(found)})" if found else "unknown format"
        seen = f"first line has {len(toks)} comma-separated fields: {line[:80]!r}"
        raise DataFormatError(path, None, what, f"{seen}; known: {', '.join(FORMATS)}")
    return found[0]


def find_split_files(path: str | Path) -> dict[str, Path]:
    """A file -> {"train": it}; a directory -> its files whose names hold train / val / test."""
    path = Path(path)
    if not path.exists():
        raise DataFormatError(path, None, "no such file or directory")
    if path.is_file():
        return {"train": path}
    found: dict[str, Path] = {}
    for f in sorted(path.iterdir()):
        name = f.name.lower()
        if not f.is_file() or name.startswith(".") or f.suffix.lower() in _NOT_DATA:
            continue
        splits = [s for s, key in _SPLIT_KEYS if key in name]
        if len(splits) > 1 or (splits and splits[0] in found):
            why = f"{f.name} matches splits {splits}; already found {sorted(found)}"
            raise DataFormatError(path, None, "cannot tell the splits apart", why)
        found |= {s: f for s in splits}
    if "train" not in found:
        names = sorted(f.name for f in path.iterdir())
        why = f"no file name contains 'train'; the directory holds {names[:10]}"
        raise DataFormatError(path, None, "no train file", why)
    return {s: found[s] for s, _ in _SPLIT_KEYS if s in found}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _carve(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded row-level (train, valid) indices, each in file order; >= 1 row stays in train."""
    n_valid = min(max(round(n * fraction), 1), n - 1) if fraction > 0 else 0
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_valid:]), np.sort(perm[:n_valid])


def convert_processed(
    path: str | Path,
    out_dir: str | Path,
    *,
    fmt: str = "auto",
    min_count: int = 1,
    valid_fraction: float = 0.1,
    seed: int = 0,
    on_bad_row: str = "strict",
) -> dict:
    """Converts a processed file / directory (see find_split_files) into a store; its manifest.

    A finished store from the same files and options is returned as is; a half-written one is
    removed and rebuilt; a finished store from other files or options is an error.
    """
    bad_arg = fmt not in ("auto", *FORMATS) or on_bad_row not in ("strict", "skip")
    if bad_arg or not 0 <= valid_fraction < 1 or min_count < 1:
        raise ValueError(
            f"bad option: fmt={fmt!r} (auto or {FORMATS}), on_bad_row={on_bad_row!r} (strict or "
            f"skip), valid_fraction={valid_fraction} (in [0, 1)), min_count={min_count} (>= 1)"
        )
    files = find_split_files(path)
    if fmt == "auto":
        fmt = detect_format(files["train"])
        for f in files.values():
            if (other := detect_format(f)) != fmt:
                raise DataFormatError(
                    f, None, "mixed formats", f"looks like {other}; train is {fmt}"
                )
    source = {
        p.name: {"split": s, "bytes": p.stat().st_size, "sha256": _sha256(p)}
        for s, p in files.items()
    }
    options = dict(min_count=min_count, valid_fraction=valid_fraction, seed=seed)
    options |= {"format": fmt, "on_bad_row": on_bad_row}
    out = Path(out_dir)
    same = lambda m: m.get("source") == source and m.get("options") == options
    if (done := store.reusable(out, same, _STORE_ENTRIES)) is not None:
        return done
    store.reset_unfinished(out)

    bad = _BadRows(on_bad_row)
    tables, schema = {}, None
    for split, f in files.items():
        if fmt == "paddle_esmm":
            tables[split], schema = _parse_esmm(f, bad, schema)
        else:
            tables[split] = _parse_fixed(f, fmt, bad)
        if not len(tables[split].labels):
            raise DataFormatError(f, None, "no usable data rows", "every row was bad")
    valid_from = "file" if "valid" in tables else None
    if valid_from is None and valid_fraction > 0 and len(tables["train"].labels) > 1:
        tr, va = _carve(len(tables["train"].labels), valid_fraction, seed)
        tables["valid"], tables["train"] = tables["train"].take(va), tables["train"].take(tr)
        valid_from = "train"
    if fmt == "paddle_esmm":
        fields, bag_fields, dense_fields = schema[0], schema[1], []
    else:
        lay = _LAYOUTS[fmt]
        fields, bag_fields, dense_fields = list(lay.sparse), [], list(lay.dense)

    train = tables["train"]
    vocabs = {f: build_vocabulary([train.column(j)], min_count) for j, f in enumerate(fields)}
    vocabs |= {b: build_vocabulary([train.bags[b][1]], min_count) for b in bag_fields}
    splits = {}
    for split in [s for s in ("train", "valid", "test") if s in tables]:
        t = tables[split]
        sparse = np.zeros(t.sparse.shape, np.int32)
        for j, name in enumerate(fields):
            sparse[:, j] = apply_vocabulary(vocabs[name], t.sparse[:, j])
        if t.present is not None:
            sparse[~t.present] = 0
        bags = {b: (t.bags[b][0], apply_vocabulary(vocabs[b], t.bags[b][1])) for b in bag_fields}
        bags = {b: (n, ids, np.ones(len(ids), np.float32)) for b, (n, ids) in bags.items()}
        writer = store.SplitWriter(out / split, 2, len(fields), len(dense_fields), bag_fields)
        writer.append(t.labels, sparse, t.dense, bags)
        splits[split] = writer.close()
    save_vocabularies(out, vocabs)
    if bad.counts:
        total = sum(bad.counts.values())
        print(f"convert_processed: skipped {total} bad rows: {dict(bad.counts)}", file=sys.stderr)
    manifest = {
        "format": fmt,
        "stage_names": STAGES,
        "fields": fields,
        "bag_fields": bag_fields,
        "dense_fields": dense_fields,
        "vocab_sizes": {f: len(v) + 1 for f, v in vocabs.items()},
        "splits": splits,
        "valid_from": valid_from,
        "source": source,
        "options": options,
        "bad_rows": dict(bad.counts),
        "input": str(Path(path).resolve()),
    }
    store.write_manifest(out, manifest)
    return store.read_manifest(out)
