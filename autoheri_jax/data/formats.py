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

Label columns are optional only for scoring (labels="optional", `autoheri predict`): a file whose
header is its format's less the label columns (AITM headerless: 18 fields; ESMM: lines
"sample_id,field:id,...") is read with zero labels, which nobody reports. prepare / training
refuse it, naming the file. A header that is clearly a format's with columns missing or extra
is refused naming those columns, with or without `fmt`.

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

import numpy as np
import pyarrow as pa

from autoheri_jax.data import csv_blocks, store
from autoheri_jax.data.csv_blocks import (
    NUMERIC,
    ByteProgress,
    finite_column,
    header_mismatch,
    id_column,
    plain_bytes,
    read_csv,
    token_mask,
)
from autoheri_jax.data.errors import DataFormatError
from autoheri_jax.data.rowcheck import (
    LABEL_TOKENS,
    LAYOUTS,
    STAGES,
    BadRows,
    Layout,
    data_start,
    esmm_labelled,
    fixed_rows,
    parse_esmm,
    read_bytes,
    split_lines,
)
from autoheri_jax.data.vocab import apply_vocabulary, build_vocabulary, save_vocabularies
from autoheri_jax.hashing import sha256_file
from autoheri_jax.progress import get_logger

_log = get_logger(__name__)  # under autoheri_jax.data: stderr by default (progress.py)
FORMATS = (*LAYOUTS, "paddle_esmm")  # the CSV layouts, and the one format with no header
ENGINES = ("arrow", "python")  # python: every row through rowcheck (the reference, for tests)
_AHEAD = 2  # blocks whose fast path runs ahead of the one being taken
_NOT_DATA = {".md", ".json", ".yaml", ".yml", ".py", ".sh", ".npy", ".npz"}
_STORE_ENTRIES = {"train", "valid", "test", "vocab", "manifest.json.tmp"}
_INT = re.compile(r"-?\d+")
_TOKEN = re.compile(r"[^:]+:-?\d+")
_SPLIT_KEYS = (("train", "train"), ("valid", "val"), ("test", "test"))
_F64 = pa.float64()
_LAYOUTS = LAYOUTS  # the old name, which tests and benchmarks import from here


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


def _fast_fixed(lay: Layout, block: bytes) -> list[list[np.ndarray]] | None:
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
    y = y or [np.zeros(t.num_rows, np.int8)] * 2  # label-free (scoring): zeros, never read
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
    # one header check for both engines: the same errors, the same label-free layout
    start, first, has_header, lay = data_start(path, fmt)
    if engine == "python":  # the reference: whole file, every row through rowcheck
        texts, lines, utf8_bad, open_last = split_lines(read_bytes(path))
        if has_header:
            texts, lines, utf8_bad = texts[1:], lines[1:], utf8_bad[1:]
        parts = _col_parts(fixed_rows(path, lay, texts, lines, utf8_bad, open_last, bad))
        rows = len(texts)
    else:
        parts, rows = [], 0
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


def _esmm_line(toks: list[str]) -> bool:
    """An ESMM line: sample_id,click,conversion,field:id,... (label-free: sample_id,field:id,...)"""
    if len(toks) > 3 and all(_INT.fullmatch(t) for t in toks[1:3]):
        return all(_TOKEN.fullmatch(t) for t in toks[3:])
    return len(toks) > 1 and ":" not in toks[0] and all(_TOKEN.fullmatch(t) for t in toks[1:])


def _nearest(toks: list[str]) -> str | None:
    """The fixed-column format whose header a header line clearly is, less or plus some
    columns: at least half its feature columns are there; fewest unexpected columns first (an
    AITM header is a subset of torch-rechub's), then fewest missing. None: no such format."""
    best = None
    for fmt, lay in LAYOUTS.items():
        feats = {c for c in lay.header if c not in lay.labels}
        if 2 * len(feats & set(toks)) < len(feats):
            continue
        key = (len(set(toks) - set(lay.header)), len(feats - set(toks)))
        best = min(best or (key, fmt), (key, fmt))
    return best and best[1]


def detect_format(path: str | Path) -> str:
    """The format of a file (a directory: of its train file), from its header / first line;
    label columns may be absent (convert_processed decides whether that is allowed).
    DataFormatError when no format, or more than one, fits (naming the nearest and why)."""
    path = Path(path)
    if path.is_dir():
        path = find_split_files(path)["train"]
    line = _first_line(path)
    toks = line.split(",")
    found = [f for f, lay in LAYOUTS.items() if toks in (lay.header, lay.unlabeled().header)]
    aitm = len(LAYOUTS["paddle_aitm"].header)
    if len(toks) in (aitm, aitm - 2) and all(_INT.fullmatch(t) for t in toks):
        found += ["paddle_aitm"] * ("paddle_aitm" not in found)  # headerless, labels or not
    if _esmm_line(toks):
        found.append("paddle_esmm")
    if not found and (near := _nearest(toks)):  # clearly that format: say what differs
        why = header_mismatch(toks, LAYOUTS[near].header, LAYOUTS[near].labels)
        raise DataFormatError(path, None, "unexpected header", f"nearest format {near}: {why}")
    if len(found) != 1:
        what = f"ambiguous format ({' or '.join(found)})" if found else "unknown format"
        seen = f"first line has {len(toks)} comma-separated fields: {line[:80]!r}"
        raise DataFormatError(path, None, what, f"{seen}; known: {', '.join(FORMATS)}")
    return found[0]


def find_split_files(path: str | Path) -> dict[str, Path]:
    """A file -> {"train": it}; a directory -> its files whose names hold train / val / test.
    DataFormatError for a missing path, a directory without a train file, or a file name
    that matches two splits."""
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
    labels: str = "required",
) -> dict:
    """Converts a processed file / directory (see find_split_files) into a store; its manifest.

    A finished store from the same files and options is returned as is; a half-written one is
    removed and rebuilt; a finished store from other files or options is an error. progress: an
    MB/s line on stderr for files that take more than a few seconds. engine: how the files are
    parsed (ENGINES; the store is the same). labels: "required" (prepare, training: a file
    without label columns is refused, naming it) or "optional" (scoring: such a file's store
    holds zero labels; the manifest lists it under "unlabeled_splits").
    """
    if engine not in ENGINES:
        raise ValueError(f"bad option: engine={engine!r} (one of {ENGINES})")
    bad_arg = fmt not in ("auto", *FORMATS) or on_bad_row not in ("strict", "skip")
    bad_arg |= labels not in ("required", "optional")
    if bad_arg or not 0 <= valid_fraction < 1 or min_count < 1:
        raise ValueError(
            f"bad option: fmt={fmt!r} (auto or {FORMATS}), on_bad_row={on_bad_row!r} (strict or "
            f"skip), valid_fraction={valid_fraction} (in [0, 1)), min_count={min_count} (>= 1), "
            f"labels={labels!r} (required or optional)"
        )
    files = find_split_files(path)
    if fmt == "auto":
        fmt = detect_format(files["train"])
        for f in files.values():
            if (other := detect_format(f)) != fmt:
                raise DataFormatError(
                    f, None, "mixed formats", f"looks like {other}; train is {fmt}"
                )
    # Headers first, before anything is written: a label-free file is refused for training
    # here, by name, not found out when the labels are needed.
    names = STAGES if fmt == "paddle_esmm" else LAYOUTS[fmt].labels
    labelled = {
        s: esmm_labelled(f) if fmt == "paddle_esmm" else bool(data_start(f, fmt)[3].labels)
        for s, f in files.items()
    }
    for s, f in files.items():
        if not labelled[s] and labels == "required":
            why = (
                f"the {fmt} label columns {names} are absent: prepare and training need "
                "them (`autoheri predict` scores a label-free file)"
            )
            raise DataFormatError(f, None, "no label columns", why)
    source = {
        p.name: {"split": s, "bytes": p.stat().st_size, "sha256": sha256_file(p)}
        for s, p in files.items()
    }
    options = dict(min_count=min_count, valid_fraction=valid_fraction, seed=seed)
    options |= {"format": fmt, "on_bad_row": on_bad_row}
    out = Path(out_dir)
    same = lambda m: m.get("source") == source and m.get("options") == options
    with store.one_writer(out):  # one conversion at a time, from the reuse check on
        if (done := store.reusable(out, same, _STORE_ENTRIES)) is not None:
            return done
        store.reset_unfinished(out)  # what an interrupted conversion of an older version left
        with store.building(out) as tmp:
            meta = {"source": source, "options": options, "input": str(Path(path).resolve())}
            _write_store(tmp, files, fmt, labelled, meta, engine, progress)
    return store.read_manifest(out)


def _write_store(
    out: Path, files: dict, fmt: str, labelled: dict, meta: dict, engine: str, progress: bool
) -> None:
    """convert_processed's conversion proper, into the (temporary) directory `out`."""
    options = meta["options"]
    on_bad_row, valid_fraction = options["on_bad_row"], options["valid_fraction"]
    seed, min_count = options["seed"], options["min_count"]
    bad = BadRows(on_bad_row)
    tables, schema = {}, None
    for split, f in files.items():
        if fmt == "paddle_esmm":
            (y, ids, present, bags), schema = parse_esmm(f, bad, schema, engine, labelled[split])
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
        lay = LAYOUTS[fmt]
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
        "source": meta["source"],
        "options": options,
        "bad_rows": counts,
        "input": meta["input"],
    }
    if unlabeled := [s for s in splits if not labelled.get(s, labelled["train"])]:
        manifest["unlabeled_splits"] = unlabeled  # their labels are zeros (scoring only)
    store.write_manifest(out, manifest)
