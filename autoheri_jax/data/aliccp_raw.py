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
written. Temp columns rather than parsing train twice: text parsing costs ~10 us per skeleton row,
replaying binary chunks runs at memory speed. Test is mapped and written while parsed.

User bags are normalised, not joined: a user's 109_14 / 110_14 / 127_14 / 150_14 (hundreds of
entries) would otherwise be copied into every one of the user's impressions (8x the raw size).
Each common file's bags become a store side table (store.SideTableWriter), vocabulary-mapped,
one row per accepted common line: side.train (serves the train and valid splits) and side.test;
an impression stores its common row as bag.<field>.row.npy, and open_split gives the field a
BagField with row_of. Item bags (210, 853) stay per row, and so do the nine single-valued user
fields: 36 bytes per impression in sparse.npy, which the models read as one [N, F] array.

Valid rows: Bernoulli(valid_fraction) per accepted skeleton row in file order from
default_rng(seed), so the split does not depend on chunk_rows.

Parsing: a chunk takes a vectorized path (bytes split / join / replace, one np.fromiter per column,
separator order checked on the raw bytes). When anything in it looks wrong, a per-line check names
the bad lines and reasons: strict raises DataFormatError at the first, skip drops and counts them.
"""

from __future__ import annotations

import hashlib
import shutil
import sys
import time
from collections import Counter
from itertools import repeat
from operator import methodcaller
from pathlib import Path

import numpy as np

from autoheri_jax.data import store
from autoheri_jax.data.errors import DataFormatError
from autoheri_jax.data.vocab import FieldCounter, apply_vocabulary, save_vocabularies

FORMAT = "aliccp_raw"
STAGES = ["click", "conversion"]
USER_SINGLE = ["101", "121", "122", "124", "125", "126", "127", "128", "129"]
ITEM_SINGLE = ["205", "206", "207", "216", "508", "509", "702", "301"]
ITEM_BAGS = ["210", "853"]
USER_BAGS = ["109_14", "110_14", "127_14", "150_14"]
FIELDS = USER_SINGLE + ITEM_SINGLE  # the sparse columns, in the order of the 23 Ali-CCP fields
BAG_FIELDS = ITEM_BAGS + USER_BAGS
RAW_FILES = {
    "train": ("common_features_train.csv", "sample_skeleton_train.csv"),
    "test": ("common_features_test.csv", "sample_skeleton_test.csv"),
}
_MISSING = np.iinfo(np.int64).min  # raw id of an absent single-valued field: never in a vocab
_F32_MAX = float(np.finfo(np.float32).max)
_SIDES = ("side.train", "side.test")  # the user-bag side tables: train + valid, test
_ENTRIES = {"train", "valid", "test", *_SIDES, "vocab", "_tmp", "manifest.json.tmp"}  # crash
_BLOCK, _CHUNK_BYTES = 8 << 20, 32 << 20  # read size; a chunk ends after this many bytes too
_SPAN = 1 << 20  # bag entries counted or mapped at a time (small: heap reuse)
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
    if len(seps) != max(3 * e - 1, 0) or not (np.append(seps, 1).reshape(-1, 3) == _SEPS).all():
        return None
    if not e and big:  # a lone non-empty feature_list without any separator
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
            if (i := _num(int, fid)) is None or not -(2**63) < i < 2**63:
                return "non-integer id", f"entry {k}: feature id {fid.decode()!r}"
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
            self.side.append({f: (ln, apply_vocabulary(self.vocabs[f], ids), vals)
                              for f, (ln, ids, vals) in bags.items()})  # fmt: skip
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
            side.append({
                f: (np.diff(off[a : b + 1]),
                    apply_vocabulary(vocabs[f], self.ids[f][off[a] : off[b]]),
                    np.asarray(self.vals[f][off[a] : off[b]]))
                for f in USER_BAGS for off in (self.offsets[f],)
            })  # fmt: skip
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

    def __init__(self, paths: dict, chunk_rows: int, skip: bool, progress: bool):
        self.paths, self.chunk_rows, self.skip, self.progress = paths, chunk_rows, skip, progress
        self.sizes = {n: p.stat().st_size for n, p in paths.items()}
        self.hashers = {n: hashlib.sha256() for n in paths}
        self.bad, self.ignored, self.timing = Counter(), Counter(), Counter()

    def stream(self, name: str, index: dict, label: str, sink, phase: str) -> None:
        path, t = self.paths[name], time.perf_counter()
        parser, last = (
            _Parser(path, "skeleton" in name, self.skip, index, self.bad, self.ignored),
            t,
        )
        for first, lines, unterm, nread in _read_chunks(path, self.chunk_rows, self.hashers[name]):
            for parsed in parser.parse(first, lines, unterm):
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
            print(f"prepare {label}: {rows} rows, {rows / el:,.0f} rows/s{mb}", file=sys.stderr)
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
) -> dict:
    """Converts raw Ali-CCP into a store at out_dir (splits train / valid / test); its manifest."""
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
    run = _Run(paths, chunk_rows, on_bad_row == "skip", progress)
    options = {"min_count": min_count, "valid_fraction": valid_fraction, "seed": seed,
               "on_bad_row": on_bad_row}  # fmt: skip
    if (done := _reusable(out, options, run.sizes)) is not None:
        print(
            f"prepare: {out} is prepared from these files already; nothing to do", file=sys.stderr
        )
        return done
    store.reset_unfinished(out)
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
    writers = {s: store.SplitWriter(out / s, len(STAGES), len(FIELDS), 0, BAG_FIELDS,
                                    dict.fromkeys(USER_BAGS, sides[side]))
               for s, side in side_of.items()}  # fmt: skip
    for path in spilled:
        z = dict(np.load(path))
        cols = (z["labels"], z["crow"], z["single"], {f: (z[f"{f}.l"], z[f"{f}.i"], z[f"{f}.v"])
                                                      for f in ITEM_BAGS})  # fmt: skip
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
        print(f"prepare: skipped {sum(run.bad.values())} bad rows ({summary})", file=sys.stderr)
    store.write_manifest(out, {
        "format": FORMAT, "stage_names": STAGES, "fields": FIELDS, "bag_fields": BAG_FIELDS,
        "dense_fields": [], "vocab_sizes": {f: len(v) + 1 for f, v in vocabs.items()},
        "splits": splits, "side_tables": side_tables,
        "bag_tables": {s: w.bag_tables for s, w in writers.items()},
        "options": options, "bad_rows": dict(run.bad),
        "source": {n: {"bytes": run.sizes[n], "sha256": h.hexdigest()}
                   for n, h in run.hashers.items()},
        "ignored_fields": dict(run.ignored),
        "timing_s": {k: round(v, 3) for k, v in run.timing.items()},
    })  # fmt: skip
    return store.read_manifest(out)
