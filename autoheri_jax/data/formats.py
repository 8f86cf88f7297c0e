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

The fixed-column formats are read in blocks by pyarrow (csv_blocks.py); a block that is not clean
is re-parsed by the exact per-row parser (rowcheck.py), which alone names and counts bad rows, so
errors, line numbers and stores do not depend on the engine (engine="python": rowcheck only, the
reference the tests compare against). paddle_esmm (variable-width lines) goes the same way:
blocks through esmm_blocks.py when clean, else rowcheck (rowcheck.parse_esmm).
"""

from __future__ import annotations

import dataclasses
import re
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyarrow as pa

from autoheri_jax.data import csv_blocks, store
from autoheri_jax.data.csv_blocks import (
    NUMERIC,
    ByteProgress,
    finite_column,
    id_column,
    open_error,
    plain_bytes,
    read_csv,
    token_mask,
)
from autoheri_jax.data.errors import DataFormatError
from autoheri_jax.data.rowcheck import (
    LABEL_TOKENS,
    STAGES,
    BadRows,
    fixed_rows,
    parse_esmm,
    read_bytes,
    split_lines,
)
from autoheri_jax.data.vocab import apply_vocabulary, build_vocabulary, save_vocabularies
from autoheri_jax.hashing import sha256_file
from autoheri_jax.progress import get_logger

_log = get_logger(__name__)  # under autoheri_jax.data: stderr by default (progress.py)
FORMATS = ("rechub_aliccp", "paddle_aitm", "paddle_esmm", "aliexpress")
ENGINES = ("arrow", "python")  # python: every row through rowcheck (the reference, for tests)
_AHEAD = 2  # blocks whose fast path runs ahead of the one being taken
_CP = ["click", "purchase"]
_ALICCP = ["101", "121", "122", "124", "125", "126", "127", "128", "129", "205", "206", "207"]
_RECHUB_SPARSE = [*_ALICCP, "210", "216", "508", "509", "702", "853", "301"]
_RECHUB_SPARSE += ["109_14", "110_14", "127_14", "150_14"]
_RECHUB_DENSE = ["D109_14", "D110_14", "D127_14", "D150_14", "D508", "D509", "D702", "D853"]
_AITM_SPARSE = [*_ALICCP, "216", "508", "509", "702", "853", "301"]
_AX_SPARSE = [f"categorical_{i}" for i in range(1, 17)]
_AX_DENSE = [f"numerical_{i}" for i in range(1, 64)]
_NOT_DATA = {".md", ".json", ".yaml", ".yml", ".py", ".sh", ".npy", ".npz"}
_STORE_ENTRIES = {"train", "valid", "test", "vocab", "manifest.json.tmp"}
_INT = re.compile(r"-?\d+")
_TOKEN = re.compile(r"[^:]+:-?\d+")
_SURROGATE = re.compile("[\udc80-\udcff]")  # bytes that were not UTF-8, kept by surrogateescape
_SPLIT_KEYS = (("train", "train"), ("valid", "val"), ("test", "test"))
_BOM = "\ufeff".encode()
_F64 = pa.float64()


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


def _data_start(path: Path, lay: _Layout, fmt: str) -> tuple[int, int]:
    """(byte offset, line number) of the first data line: after the header if the first
    non-blank line is one (rowcheck.split_lines's notion of blank), else that line."""
    try:
        f = path.open("rb")
    except OSError as e:
        raise open_error(path, e) from e
    header, pos = ",".join(lay.header), 0
    with f:
        for lineno, raw in enumerate(f, 1):
            text = raw.decode("utf-8", "surrogateescape").removesuffix("\n")
            text = (text.removeprefix("\ufeff") if lineno == 1 else text).removesuffix("\r")
            if text.strip() or _SURROGATE.search(text):
                if text.strip() == header:
                    return pos + len(raw), lineno + 1
                if lay.header_required:
                    got = f"expected the {fmt} header {header[:50]!r}..., got {text[:50]!r}"
                    raise DataFormatError(path, lineno, "unexpected header", got)
                return pos + (len(_BOM) if pos == 0 and raw.startswith(_BOM) else 0), lineno
            pos += len(raw)
    raise DataFormatError(path, None, "empty file")


def _fast_fixed(lay: _Layout, block: bytes) -> list[list[np.ndarray]] | None:
    """[labels, raw ids, dense] columns of a block whose every row is clean, else None (see
    csv_blocks); column lists, not [n, C] arrays: a strided write per cell costs more than the
    parse."""
    if not plain_bytes(block, NUMERIC):
        return None
    types = {c: pa.string() for c in lay.labels + lay.sparse} | dict.fromkeys(lay.dense, _F64)
    t = read_csv(block, lay.header, types, lay.labels + lay.sparse + lay.dense)
    if t is None or not all(token_mask(t.column(c), LABEL_TOKENS).all() for c in lay.labels):
        return None
    y = [token_mask(t.column(c), ("1", "1.0")).astype(np.int8) for c in lay.labels]
    ids = [id_column(t.column(c)) for c in lay.sparse]
    dense = [finite_column(t.column(c)) for c in lay.dense]
    if any(c is None for c in ids + dense) or (y[1] > y[0]).any():
        return None
    return [y, ids, [c.astype(np.float32) for c in dense]]


def _columns(parts: list, k: int, dtype, width: int) -> np.ndarray:
    """[N, width] array of part lists' k-th column lists, stored column-major (the vocabulary
    passes read one column at a time)."""
    n = sum(len(p[0][0]) for p in parts)
    out = np.empty((width, n), dtype)
    for j in range(width):
        np.concatenate([p[k][j] for p in parts], out=out[j])
    return out.T


def _col_parts(parts: list) -> list:
    return [[list(a.T) for a in p] for p in parts]


def _parse_fixed(path: Path, fmt: str, bad: BadRows, engine: str, progress: bool) -> _Table:
    lay = _LAYOUTS[fmt]
    if engine == "python":  # the reference: whole file, every row through rowcheck
        texts, lines, utf8_bad, open_last = split_lines(read_bytes(path))
        header = ",".join(lay.header)
        if texts[0].strip() == header:
            texts, lines, utf8_bad = texts[1:], lines[1:], utf8_bad[1:]
        elif lay.header_required:
            got = f"expected the {fmt} header {header[:50]!r}..., got {texts[0][:50]!r}"
            raise DataFormatError(path, int(lines[0]), "unexpected header", got)
        parts = _col_parts(fixed_rows(path, lay, texts, lines, utf8_bad, open_last, bad))
        rows = len(texts)
    else:
        (start, first), parts, rows = _data_start(path, lay, fmt), [], 0
        meter = ByteProgress(path.name, path.stat().st_size, progress)

        def take(line: int, block: bytes, done: int, cols) -> None:
            nonlocal rows
            if cols is not None:
                parts.append(cols)
                rows += len(cols[0][0])
            else:  # in file order: strict mode names the first bad row, skip counts add up
                texts, lines, utf8_bad, open_last = split_lines(block, line, at_start=False)
                rows += len(texts)
                parts.extend(
                    _col_parts(fixed_rows(path, lay, texts, lines, utf8_bad, open_last, bad))
                )
            meter.update(done, rows)

        # The fast path of the next block runs while this one's columns are cast (pyarrow and
        # numpy release the GIL); it has no side effects, so only `take` must keep file order.
        # At most _AHEAD blocks are in flight: memory stays bounded by blocks, not the file.
        with ThreadPoolExecutor(max_workers=2) as pool:
            pending: deque = deque()
            for line, block, done in csv_blocks.read_blocks(path, start, first):
                pending.append((line, block, done, pool.submit(_fast_fixed, lay, block)))
                if len(pending) > _AHEAD:
                    line_, block_, done_, fut = pending.popleft()
                    take(line_, block_, done_, fut.result())
            while pending:
                line_, block_, done_, fut = pending.popleft()
                take(line_, block_, done_, fut.result())
        meter.close(rows)
    if not rows:
        raise DataFormatError(path, None, "no data rows")
    y, ids = _columns(parts, 0, np.int8, 2), _columns(parts, 1, np.int64, len(lay.sparse))
    return _Table(y, ids, None, _columns(parts, 2, np.float32, len(lay.dense)), {})


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
    progress: bool = True,
    engine: str = "arrow",
) -> dict:
    """Converts a processed file / directory (see find_split_files) into a store; its manifest.

    A finished store from the same files and options is returned as is; a half-written one is
    removed and rebuilt; a finished store from other files or options is an error. progress: an
    MB/s line on stderr for files that take more than a few seconds. engine: how the files are
    parsed (ENGINES; the store is the same).
    """
    if engine not in ENGINES:
        raise ValueError(f"bad option: engine={engine!r} (one of {ENGINES})")
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
        p.name: {"split": s, "bytes": p.stat().st_size, "sha256": sha256_file(p)}
        for s, p in files.items()
    }
    options = dict(min_count=min_count, valid_fraction=valid_fraction, seed=seed)
    options |= {"format": fmt, "on_bad_row": on_bad_row}
    out = Path(out_dir)
    same = lambda m: m.get("source") == source and m.get("options") == options
    if (done := store.reusable(out, same, _STORE_ENTRIES)) is not None:
        return done
    store.reset_unfinished(out)

    bad = BadRows(on_bad_row)
    tables, schema = {}, None
    for split, f in files.items():
        if fmt == "paddle_esmm":
            (y, ids, present, bags), schema = parse_esmm(f, bad, schema, engine)
            tables[split] = _Table(y, ids, present, np.zeros((len(y), 0), np.float32), bags)
        else:
            tables[split] = _parse_fixed(f, fmt, bad, engine, progress)
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
        sparse = np.zeros(t.sparse.shape[::-1], np.int32).T  # column-major, as t.sparse
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
    counts = dict(sorted(bad.counts.items()))  # by reason: the same whatever the block sizes
    if counts:
        total = sum(counts.values())
        _log.warning(f"convert_processed: skipped {total} bad rows: {counts}")
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
        "bad_rows": counts,
        "input": str(Path(path).resolve()),
    }
    store.write_manifest(out, manifest)
    return store.read_manifest(out)
