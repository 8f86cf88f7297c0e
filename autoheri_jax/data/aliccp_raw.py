"""Streaming conversion of the raw Ali-CCP files (Tianchi dataset 408) into the columnar store.

raw_dir holds sample_skeleton_{train,test}.csv (`sample_id,click,conversion,common_feature_index,
feature_count,feature_list`: item / cross fields) and common_features_{train,test}.csv
(`common_feature_index,feature_count,feature_list`: user fields); a feature_list is entries
`field\\x02feature_id\\x03value` joined by `\\x01`. Multi-valued fields become bag fields.

Each raw file is read once, in binary blocks, hashed while read. Train: the common file becomes a
table of user-side raw ids (single fields in memory, bags spilled to out_dir/_tmp) plus a dict
common_feature_index -> row; the skeleton is parsed, joined by row number, split train / valid,
counted (item ids of train rows, train rows per common row) and spilled chunk by chunk as raw
int64 .npz. Vocabularies come from the train split only (user ids counted once per common row,
weighted by its train rows: per impression); the spilled chunks are then mapped, joined and
written. Temp columns rather than parsing train twice: replaying binary chunks runs at memory
speed, text parsing far below it (docs/benchmarks.md). Test is mapped and written while parsed.

User bags are normalised, not joined: a user's 109_14 / 110_14 / 127_14 / 150_14 (hundreds of
entries) would otherwise be copied into every one of the user's impressions (8x the raw size).
Each common file's bags become a store side table (store.SideTableWriter), vocabulary-mapped,
one row per accepted common line: side.train (serves the train and valid splits) and side.test;
an impression stores its common row as bag.<field>.row.npy, and open_split gives the field a
BagField with row_of. Item bags (210, 853) stay per row, and so do the nine single-valued user
fields: 36 bytes per impression in sparse.npy, which the models read as one [N, F] array.

Valid rows: Bernoulli(valid_fraction) per accepted skeleton row in file order from
default_rng(seed), so the split does not depend on chunk_rows.

Parsing (aliccp_rows.py): engine "arrow" parses blocks of whole lines with pyarrow / numpy
(aliccp_blocks.py); a block with anything off goes, bisected, to the exact per-line parser (engine
"python" uses it alone), which names the bad lines: strict raises DataFormatError at the first, skip
drops and counts them. Stores, errors and counts do not depend on the engine.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from collections import Counter
from pathlib import Path

import numpy as np

from autoheri_jax.data import store
from autoheri_jax.data.aliccp_blocks import read_blocks
from autoheri_jax.data.aliccp_rows import (
    _BLOCK,
    ITEM_BAGS,
    ITEM_SINGLE,
    USER_BAGS,
    USER_SINGLE,
    _Parser,
    _read_chunks,
)
from autoheri_jax.data.aliccp_rows import MISSING as _MISSING
from autoheri_jax.data.errors import DataFormatError
from autoheri_jax.data.vocab import FieldCounter, apply_vocabulary, save_vocabularies
from autoheri_jax.progress import get_logger

_log = get_logger(__name__)  # under autoheri_jax.data: stderr by default (progress.py)
FORMAT = "aliccp_raw"
STAGES = ["click", "conversion"]
FIELDS = USER_SINGLE + ITEM_SINGLE  # the sparse columns, in the order of the 23 Ali-CCP fields
BAG_FIELDS = ITEM_BAGS + USER_BAGS
RAW_FILES = {
    "train": ("common_features_train.csv", "sample_skeleton_train.csv"),
    "test": ("common_features_test.csv", "sample_skeleton_test.csv"),
}
_SIDES = ("side.train", "side.test")  # the user-bag side tables: train + valid, test
_ENTRIES = {"train", "valid", "test", *_SIDES, "vocab", "_tmp", "manifest.json.tmp"}  # crash
ENGINES = ("arrow", "python")
_SPAN = 1 << 20  # bag entries counted or mapped at a time (small: heap reuse)


class _Spill:
    """A temp column appended chunk by chunk (a store.NpyAppender), read back as a memmap."""

    def __init__(self, path: Path, dtype):
        self.out = store.NpyAppender(path, dtype, ())

    def add(self, a: np.ndarray) -> None:
        self.out.append(np.asarray(a).reshape(-1))

    def read(self) -> np.ndarray:
        self.out.close()
        if not self.out.rows:
            return np.zeros(0, self.out.dtype)
        return np.load(self.out.path, mmap_mode="r")


def _map_cols(raw: np.ndarray, names: list[str], vocabs: dict) -> np.ndarray:
    out = np.empty(raw.shape, np.int32)
    for j, f in enumerate(names):
        out[:, j] = apply_vocabulary(vocabs[f], raw[:, j])
    return out


class _Table:
    """The user side of one common file (row r = its r-th accepted line). Single-valued fields
    stay in memory (joined into each impression's sparse row); bags go to the side table that
    row r of becomes: spilled raw to disk first when vocabularies are not built yet (train),
    otherwise mapped and written while parsed (test)."""

    def __init__(self, tmp: Path, tag: str, vocabs: dict | None, side=None):
        self.tmp, self.tag, self.vocabs, self.side, self.parts = tmp, tag, vocabs, side, []
        if vocabs is None:
            self.lens: dict[str, list] = {f: [] for f in USER_BAGS}
            self.ids = {f: _Spill(tmp / f"{tag}.{f}.ids", np.int64) for f in USER_BAGS}
            self.vals = {f: _Spill(tmp / f"{tag}.{f}.vals", np.float32) for f in USER_BAGS}

    def add(self, single, bags) -> None:
        if self.vocabs:
            self.parts.append(_map_cols(single, USER_SINGLE, self.vocabs))
            self.side.append(
                {
                    f: (ln, apply_vocabulary(self.vocabs[f], ids), vals)
                    for f, (ln, ids, vals) in bags.items()
                }
            )
            return
        self.parts.append(single)
        for f, (ln, ids, vals) in bags.items():
            self.lens[f].append(ln)
            self.ids[f].add(ids)
            self.vals[f].add(vals)

    def finish(self) -> _Table:
        self.single = np.concatenate(self.parts)
        if self.vocabs is None:
            lens = {f: np.concatenate(v) for f, v in self.lens.items()}
            self.offsets = {f: np.concatenate([[0], np.cumsum(v)]) for f, v in lens.items()}
            self.ids = {f: s.read() for f, s in self.ids.items()}
            self.vals = {f: s.read() for f, s in self.vals.items()}
        return self

    def _blocks(self, off: np.ndarray):
        """Row ranges [a, b) of ~_SPAN bag entries each (per the entries in offsets off)."""
        n = len(off) - 1
        step = max(1, _SPAN * n // max(int(off[-1]), 1))
        return ((a, min(a + step, n)) for a in range(0, n, step))

    def count(self, counters: dict, refs: np.ndarray) -> None:
        """Counts each common row's raw ids once per train skeleton row that references it."""
        keep = refs > 0
        for j, f in enumerate(USER_SINGLE):
            k = keep & (self.single[:, j] != _MISSING)
            counters[f].update(self.single[k, j], refs[k])
        for f in USER_BAGS:
            off = self.offsets[f]
            for a, b in self._blocks(off):
                w = np.repeat(refs[a:b], np.diff(off[a : b + 1]))
                counters[f].update(np.asarray(self.ids[f][off[a] : off[b]])[w > 0], w[w > 0])

    def map(self, vocabs: dict, side) -> None:
        """Maps the single fields in place and writes the bags, mapped, as the side table."""
        self.single = _map_cols(self.single, USER_SINGLE, vocabs)
        total = np.sum([self.offsets[f] for f in USER_BAGS], axis=0)  # all fields' entries
        for a, b in self._blocks(total):
            side.append(
                {
                    f: (
                        np.diff(off[a : b + 1]),
                        apply_vocabulary(vocabs[f], self.ids[f][off[a] : off[b]]),
                        np.asarray(self.vals[f][off[a] : off[b]]),
                    )
                    for f in USER_BAGS
                    for off in (self.offsets[f],)
                }
            )
        for f in USER_BAGS:  # the raw spills are no longer needed
            self.ids[f] = self.vals[f] = None
            for kind in ("ids", "vals"):
                (self.tmp / f"{self.tag}.{f}.{kind}").unlink(missing_ok=True)


def _write(writer, vocabs: dict, table: _Table, labels, crow, single, bags, keep=None) -> None:
    """Maps and joins the rows (all, or where keep) and appends them: user single fields are
    copied in, user bags are referenced by common row (their side-table row)."""
    rows = np.arange(len(labels)) if keep is None else np.flatnonzero(keep)
    m, c = np.zeros(len(labels), bool), crow[rows]
    m[rows] = True
    sparse = np.concatenate([table.single[c], _map_cols(single[rows], ITEM_SINGLE, vocabs)], 1)
    out = dict.fromkeys(USER_BAGS, c)
    for f, (ln, ids, vals) in bags.items():
        em = np.repeat(m, ln)
        out[f] = (ln[rows], apply_vocabulary(vocabs[f], ids[em]), vals[em])
    writer.append(labels[rows], sparse, np.zeros((len(rows), 0), np.float32), out)


class _Run:
    """One conversion's inputs, counters and timings; `stream` runs one pass over one file."""

    def __init__(self, paths: dict, chunk_rows: int, skip: bool, progress: bool, engine: str):
        self.paths, self.chunk_rows, self.skip, self.progress = paths, chunk_rows, skip, progress
        self.engine = engine
        self.sizes = {n: p.stat().st_size for n, p in paths.items()}
        self.hashers = {n: hashlib.sha256() for n in paths}
        self.bad, self.ignored, self.timing = Counter(), Counter(), Counter()

    def stream(self, name: str, index: dict, label: str, sink, phase: str) -> None:
        path, t = self.paths[name], time.perf_counter()
        parser, last = (
            _Parser(path, "skeleton" in name, self.skip, index, self.bad, self.ignored),
            t,
        )
        if self.engine == "python":
            chunks, parse = _read_chunks(path, self.chunk_rows, self.hashers[name]), parser.parse
        else:
            chunks = read_blocks(path, _BLOCK, self.chunk_rows, self.hashers[name])
            parse = parser.parse_block
        for first, lines, unterm, nread in chunks:
            for parsed in parse(first, lines, unterm):
                sink(*parsed)
            if time.perf_counter() - last > 1.5 and nread < self.sizes[name]:
                last = self.report(label, parser.rows, nread, t)
        self.report(label, parser.rows, self.sizes[name], t)
        if not parser.rows:
            raise DataFormatError(path, None, "no valid rows", "every line was bad")
        self.timing[phase] += time.perf_counter() - t

    def report(self, label: str, rows: int, nbytes: int, t0: float) -> float:
        now = time.perf_counter()
        el = max(now - t0, 1e-9)
        mb = f", {nbytes / el / 1e6:.1f} MB/s" if nbytes else ""
        if self.progress:
            _log.info(f"prepare {label}: {rows} rows, {rows / el:,.0f} rows/s{mb}")
        return now


def _reusable(out: Path, options: dict, sizes: dict) -> dict | None:
    """store.reusable with this converter's test: same format, options and input sizes."""

    def same(m: dict) -> bool:
        old = {k: v.get("bytes") for k, v in m.get("source", {}).items()}
        return m.get("format") == FORMAT and m.get("options") == options and old == sizes

    return store.reusable(out, same, _ENTRIES)


def prepare_aliccp_raw(
    raw_dir: str | Path,
    out_dir: str | Path,
    *,
    min_count: int = 10,
    valid_fraction: float = 0.1,
    seed: int = 0,
    on_bad_row: str = "strict",
    chunk_rows: int = 100_000,
    progress: bool = True,
    engine: str = "arrow",
) -> dict:
    """Converts raw Ali-CCP into a store at out_dir (splits train / valid / test); its manifest.
    engine: "arrow" (block fast path) or "python" (the exact per-line parser only); the store
    does not depend on it (see aliccp_rows.py). A finished store from the same files and
    options is reused. DataFormatError for a missing, empty or (strict) malformed raw file,
    StoreError for a finished store from other inputs, ValueError for a bad option."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if on_bad_row not in ("strict", "skip"):
        raise ValueError(f"on_bad_row must be 'strict' or 'skip', got {on_bad_row!r}")
    if not 0.0 <= valid_fraction < 1.0 or min_count < 1 or chunk_rows < 1:
        raise ValueError("need 0 <= valid_fraction < 1, min_count >= 1 and chunk_rows >= 1")
    out, paths = Path(out_dir), {n: Path(raw_dir) / n for p in RAW_FILES.values() for n in p}
    for p in paths.values():
        if not p.is_file():
            raise DataFormatError(p, None, "no such file", "a raw Ali-CCP input file is missing")
        if not p.stat().st_size:
            raise DataFormatError(p, None, "empty file")
    run = _Run(paths, chunk_rows, on_bad_row == "skip", progress, engine)
    options = {
        "min_count": min_count,
        "valid_fraction": valid_fraction,
        "seed": seed,
        "on_bad_row": on_bad_row,
    }
    with store.one_writer(out):  # one conversion at a time, from the reuse check on
        if (done := _reusable(out, options, run.sizes)) is not None:
            _log.info(f"prepare: {out} is prepared from these files already; nothing to do")
            return done
        store.reset_unfinished(out)  # what an interrupted conversion of an older version left
        with store.building(out) as build:  # renamed to `out` complete, manifest and all
            _convert(run, build, options)
    return store.read_manifest(out)


def _convert(run: _Run, out: Path, options: dict) -> None:
    """prepare_aliccp_raw's conversion proper, into the (temporary) directory `out`."""
    min_count, valid_fraction, seed = (options[k] for k in ("min_count", "valid_fraction", "seed"))
    (tmp := out / "_tmp").mkdir(parents=True)
    # 1-2: the train common table, then the train skeleton, spilled chunk by chunk
    index: dict[bytes, int] = {}
    table = _Table(tmp, "train", None)
    run.stream(RAW_FILES["train"][0], index, "train common", table.add, "common")
    table.finish()
    counters = {f: FieldCounter() for f in FIELDS + BAG_FIELDS}
    refs, rng, spilled = np.zeros(len(table.single), np.int64), np.random.default_rng(seed), []

    def spill_train(labels, crow, single, bags) -> None:
        valid = rng.random(len(labels)) < valid_fraction
        train = ~valid
        for j, f in enumerate(ITEM_SINGLE):
            col = single[train, j]
            counters[f].update(col[col != _MISSING])
        for f, (ln, ids, _) in bags.items():
            counters[f].update(ids[np.repeat(train, ln)])
        refs[:] += np.bincount(crow[train], minlength=len(refs))
        parts = {f"{f}.{k}": a for f, v in bags.items() for k, a in zip("liv", v, strict=True)}
        spilled.append(tmp / f"train.{len(spilled)}.npz")
        np.savez(spilled[-1], labels=labels, crow=crow, valid=valid, single=single, **parts)

    run.stream(RAW_FILES["train"][1], index, "train", spill_train, "skeleton")
    # 3: vocabularies (train split only), then the common table mapped: its bags become the
    # train side table, shared by the train and valid splits
    t = time.perf_counter()
    table.count(counters, refs)
    vocabs = {f: counters[f].vocabulary(min_count) for f in FIELDS + BAG_FIELDS}
    save_vocabularies(out, vocabs)
    sides = {s: store.SideTableWriter(out / f"side.{s}", USER_BAGS) for s in ("train", "test")}
    table.map(vocabs, sides["train"])
    side_tables = {sides["train"].name: sides["train"].close()}
    run.timing["vocab"] += time.perf_counter() - t
    # 4: the spilled train chunks -> train / valid
    t, done_rows = time.perf_counter(), 0
    side_of = {"train": "train", "valid": "train", "test": "test"}
    writers = {
        s: store.SplitWriter(
            out / s, len(STAGES), len(FIELDS), 0, BAG_FIELDS, dict.fromkeys(USER_BAGS, sides[side])
        )
        for s, side in side_of.items()
    }
    for path in spilled:
        z = dict(np.load(path))
        cols = (
            z["labels"],
            z["crow"],
            z["single"],
            {f: (z[f"{f}.l"], z[f"{f}.i"], z[f"{f}.v"]) for f in ITEM_BAGS},
        )
        _write(writers["train"], vocabs, table, *cols, ~z["valid"])
        _write(writers["valid"], vocabs, table, *cols, z["valid"])
        path.unlink()
        done_rows += len(z["labels"])
    run.report("train write", done_rows, 0, t)
    run.timing["write"] += time.perf_counter() - t
    # 5: test, mapped with the train vocabularies; its common table is the test side table
    index, table = {}, _Table(tmp, "test", vocabs, sides["test"])
    run.stream(RAW_FILES["test"][0], index, "test common", table.add, "common")
    table.finish()
    side_tables[sides["test"].name] = sides["test"].close()
    write_test = lambda *cols: _write(writers["test"], vocabs, table, *cols)
    run.stream(RAW_FILES["test"][1], index, "test", write_test, "skeleton")
    splits = {s: w.close() for s, w in writers.items()}
    shutil.rmtree(tmp)
    if run.bad:
        summary = ", ".join(f"{r}: {c}" for r, c in sorted(run.bad.items()))
        _log.warning(f"prepare: skipped {sum(run.bad.values())} bad rows ({summary})")
    store.write_manifest(
        out,
        {
            "format": FORMAT,
            "stage_names": STAGES,
            "fields": FIELDS,
            "bag_fields": BAG_FIELDS,
            "dense_fields": [],
            "vocab_sizes": {f: len(v) + 1 for f, v in vocabs.items()},
            "splits": splits,
            "side_tables": side_tables,
            "bag_tables": {s: w.bag_tables for s, w in writers.items()},
            "options": options,
            "bad_rows": dict(run.bad),
            "source": {
                n: {"bytes": run.sizes[n], "sha256": h.hexdigest()} for n, h in run.hashers.items()
            },
            "ignored_fields": dict(run.ignored),
            "timing_s": {k: round(v, 3) for k, v in run.timing.items()},
        },
    )
