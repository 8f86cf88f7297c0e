"""The on-disk columnar store every data format is converted into, and its memory-mapped reader.

Layout of a store directory:

  manifest.json                 written last, atomically: its presence marks a finished store
  <split>/labels.npy            int8    [N, T]  cumulative funnel labels
  <split>/sparse.npy            int32   [N, F]  single-valued fields, vocabulary-mapped (0 = rare)
  <split>/dense.npy             float32 [N, Dd]
  <split>/bag.<field>.offsets.npy  int64 [N + 1]  multi-valued field: row r owns ids[o[r]:o[r+1]]
  <split>/bag.<field>.ids.npy      int32 [nnz]
  <split>/bag.<field>.values.npy   float32 [nnz]  feature values (weights for pooling)

Shared bag fields. A field whose bags belong to an entity many rows refer to (a user's 150_14
bag, copied into each of the user's impressions, would multiply the store's size) is stored once
per entity, in a side table, and each row stores only its entity's side-table row:

  side.<name>/bag.<field>.offsets.npy  int64 [K + 1]  side-table row k owns ids[o[k]:o[k+1]]
  side.<name>/bag.<field>.ids.npy      int32 [nnz]
  side.<name>/bag.<field>.values.npy   float32 [nnz]
  <split>/side.<name>.row.npy          int32 [N]      row r's bags are side-table row row[r]

A side table holds any number of fields of one entity (a user's 109_14 ... 150_14), so a split
stores one row column per side table it uses, shared by those fields; several splits may share
one side table (e.g. train and valid carved from one raw file). The manifest then has
  "side_tables": {"side.<name>": {"rows": K, "bag_fields": [...]}}
  "bag_tables": {"<split>": {"<field>": "side.<name>", ...}}
and a (split, field) pair absent from bag_tables is stored per row as above, so stores without
these keys (older ones, the peer-format converter's) read unchanged. open_split turns a shared
field into BagField(starts, ends, ids, values from the side table, row_of=side.<name>.row.npy).

A converter holds `one_writer(out)` (an OS lock) from its reuse check to the end, and writes
into `building(out)`, a directory beside `out` renamed into place complete: two conversions to
one place never mix their columns, and a reader never sees a half-written store.

Writing: `SideTableWriter(root / "side.<name>", fields)` appends (lengths, ids, values) per field
for n more entities at a time; `SplitWriter(..., bags, shared={field: side_writer})` then takes,
for a shared field, a rows array [n] in place of (lengths, ids, values), each row checked against
the side rows written so far (the fields of one side table must be given equal rows: it is one
column). The converter adds `{name: side.close()}` as side_tables and
`{split: writer.bag_tables}` as bag_tables to the manifest.

Columns are written in chunks through `NpyAppender` (a .npy file whose header is rewritten with
the final row count), so converting tens of GB never holds more than one chunk in memory. The
reader opens every column with `np.load(mmap_mode="r")`: a batch is one fancy-index gather per
column (two for a shared bag: row.npy, then the side table), and nothing is read until a batch
asks for it.

manifest.json holds: format_version, stage_names, fields, bag_fields, dense_fields,
vocab_sizes (field -> size, single and bag), splits (split -> rows, positive_rate), optionally
side_tables and bag_tables, and whatever the converter adds (source files and hashes, options,
bad-row counts), and "columns": every .npy file's bytes, dtype, shape and SHA-256, which opening
a store checks (integrity.py: headers and sizes always, hashes once per workdir or under
--verify; column_ranges.py: label and id ranges).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from autoheri_jax import safe_output, workdir_lock
from autoheri_jax.data import column_ranges, integrity
from autoheri_jax.data.dataset import BagField, CTRDataset
from autoheri_jax.data.errors import StoreError  # re-exported: importers take it from here

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SIDE_PREFIX = "side."  # directory name prefix of a shared bag table
_HEADER_BYTES = 128  # fixed .npy header size, so the final shape can be written in place


class NpyAppender:
    """Appends row chunks to a .npy file; `close` writes the true shape into the header."""

    def __init__(self, path: Path, dtype: np.dtype, row_shape: tuple[int, ...]):
        self.path, self.dtype, self.row_shape, self.rows = path, np.dtype(dtype), row_shape, 0
        self.f = path.open("wb")
        self.f.write(b"\0" * _HEADER_BYTES)

    def append(self, chunk: np.ndarray) -> None:
        """Appends chunk [n, *row_shape] (cast to the dtype); StoreError for another row shape."""
        chunk = np.ascontiguousarray(chunk, dtype=self.dtype)
        if chunk.shape[1:] != self.row_shape:
            raise StoreError(f"{self.path}: chunk rows {chunk.shape[1:]} != {self.row_shape}")
        self.f.write(chunk.tobytes())
        self.rows += chunk.shape[0]

    def close(self) -> None:
        """Writes the header with the rows appended and closes the file."""
        header = {
            "descr": np.lib.format.dtype_to_descr(self.dtype),
            "fortran_order": False,
            "shape": (self.rows, *self.row_shape),
        }
        text = repr(header).encode("latin1")
        pad = _HEADER_BYTES - 10 - len(text) - 1
        if pad < 0:
            raise StoreError(f"{self.path}: header does not fit in {_HEADER_BYTES} bytes")
        self.f.seek(0)
        self.f.write(b"\x93NUMPY\x01\x00" + (_HEADER_BYTES - 10).to_bytes(2, "little"))
        self.f.write(text + b" " * pad + b"\n")
        self.f.close()


class _CsrWriter:
    """One bag field's offsets / ids / values columns under root, appended chunk by chunk."""

    def __init__(self, root: Path, field: str):
        self.field = field
        self.offsets = NpyAppender(root / f"bag.{field}.offsets.npy", np.int64, ())
        self.ids = NpyAppender(root / f"bag.{field}.ids.npy", np.int32, ())
        self.values = NpyAppender(root / f"bag.{field}.values.npy", np.float32, ())
        self.offsets.append(np.zeros(1, np.int64))
        self.nnz = 0

    def check(self, n: int, lengths: np.ndarray, ids: np.ndarray, values: np.ndarray) -> None:
        lengths = np.asarray(lengths)
        if lengths.shape != (n,) or int(lengths.sum()) != len(ids) or len(ids) != len(values):
            raise StoreError(f"bag field {self.field}: lengths / ids / values do not agree")
        if n and lengths.min() < 0:
            raise StoreError(f"bag field {self.field}: negative bag length")

    def append(self, n: int, lengths: np.ndarray, ids: np.ndarray, values: np.ndarray) -> None:
        self.check(n, lengths, ids, values)
        lengths = np.asarray(lengths, np.int64)
        self.offsets.append(self.nnz + np.cumsum(lengths))
        self.ids.append(ids)
        self.values.append(values)
        self.nnz += len(ids)

    def close(self) -> None:
        for col in (self.offsets, self.ids, self.values):
            col.close()


class SideTableWriter:
    """Streams one shared bag table (a `side.<name>` directory of the store), row by row.

    Row k holds one entity's bags (e.g. one user's 109_14 ... 150_14), written once however
    many dataset rows refer to it. `rows` counts the rows appended so far: a SplitWriter row
    may refer to any of them, so a converter can interleave the two streams.
    """

    def __init__(self, root: Path, bags: Sequence[str]):
        if not root.name.startswith(SIDE_PREFIX) or root.name == SIDE_PREFIX:
            raise StoreError(f"{root}: a side table directory is named {SIDE_PREFIX}<name>")
        root.mkdir(parents=True, exist_ok=True)
        self.root, self.name = root, root.name
        self.bags = {b: _CsrWriter(root, b) for b in bags}
        self.rows = 0

    def append(self, bags: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]]) -> None:
        """n more rows: bags maps every field to (lengths [n], ids [sum lengths], values)."""
        if set(bags) != set(self.bags):
            raise StoreError(f"{self.root}: chunk bag fields {sorted(bags)} != {sorted(self.bags)}")
        ns = {len(v[0]) for v in bags.values()}
        if len(ns) > 1:
            raise StoreError(f"{self.root}: chunk fields have different row counts {sorted(ns)}")
        n = ns.pop() if ns else 0
        for b, cols in self.bags.items():
            cols.check(n, *bags[b])
        for b, cols in self.bags.items():
            cols.append(n, *bags[b])
        self.rows += n

    def close(self) -> dict:
        """Closes the columns; returns the table's manifest entry (see `side_tables`)."""
        for cols in self.bags.values():
            cols.close()
        return {"rows": self.rows, "bag_fields": list(self.bags)}


class SplitWriter:
    """Streams one split's columns to disk, chunk by chunk.

    bags lists the split's bag fields. shared maps some of them to the SideTableWriter holding
    their bags (a sibling directory of root): for those fields `append` takes each row's side
    table row instead of the bags themselves, stored once per side table as <side name>.row.npy.
    """

    def __init__(
        self,
        root: Path,
        num_stages: int,
        num_fields: int,
        num_dense: int,
        bags: Sequence[str],
        shared: Mapping[str, SideTableWriter] | None = None,
    ):
        shared = dict(shared or {})
        sides: dict[str, SideTableWriter] = {}
        for b, side in shared.items():
            if b not in bags or b not in side.bags:
                raise StoreError(
                    f"shared bag field {b} is not a bag field of the split and {side.root}"
                )
            if side.root.parent.resolve() != root.parent.resolve():
                raise StoreError(f"{side.root} is not in the store of {root}")
            if sides.setdefault(side.name, side) is not side:
                raise StoreError(f"two side table writers named {side.name}")
        root.mkdir(parents=True, exist_ok=True)
        self.labels = NpyAppender(root / "labels.npy", np.int8, (num_stages,))
        self.sparse = NpyAppender(root / "sparse.npy", np.int32, (num_fields,))
        self.dense = NpyAppender(root / "dense.npy", np.float32, (num_dense,))
        self.bags = {b: _CsrWriter(root, b) for b in bags if b not in shared}
        self.shared = shared
        self.row_cols = {  # side name -> (writer, row column, its fields)
            name: (
                side,
                NpyAppender(root / f"{name}.row.npy", np.int32, ()),
                [b for b in shared if shared[b] is side],
            )
            for name, side in sides.items()
        }
        self.fields = list(bags)
        self.rows = 0
        self.positives: np.ndarray = np.zeros(num_stages, np.int64)

    @property
    def bag_tables(self) -> dict[str, str]:
        """Shared field -> side table name: this split's entry of the manifest's bag_tables."""
        return {b: side.name for b, side in self.shared.items()}

    def append(
        self,
        labels: np.ndarray,
        sparse: np.ndarray,
        dense: np.ndarray,
        bags: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray] | np.ndarray] | None = None,
    ) -> None:
        """One chunk of n rows: labels [n, T] 0/1, sparse [n, F], dense [n, Dd]; bags: field ->
        (lengths [n], ids [sum lengths], values [same]), or for a shared field, rows int [n]:
        each row's row in the field's side table (equal for the fields of one side table).
        StoreError, before anything is written, when the chunk does not fit the split."""
        n = labels.shape[0]
        if sparse.shape[0] != n or dense.shape[0] != n:
            raise StoreError(f"chunk row counts differ: {n}, {sparse.shape[0]}, {dense.shape[0]}")
        bags = bags or {}
        if set(bags) != set(self.fields):
            raise StoreError(f"chunk bag fields {sorted(bags)} != store's {sorted(self.fields)}")
        side_rows = {}
        for name, (side, _, fields) in self.row_cols.items():
            rows = side_rows[name] = np.asarray(bags[fields[0]])
            if rows.shape != (n,) or (n and rows.dtype.kind not in "iu"):
                raise StoreError(f"shared bag field {fields[0]}: rows must be integer [{n}]")
            if n and (rows.min() < 0 or rows.max() >= side.rows):
                raise StoreError(
                    f"shared bag field {fields[0]}: rows span [{rows.min()}, {rows.max()}], "
                    f"outside the {side.rows} rows of {side.root}"
                )
            if n and rows.max() > np.iinfo(np.int32).max:
                raise StoreError(f"{side.root}: row {rows.max()} does not fit the int32 column")
            for b in fields[1:]:
                if bags[b] is not bags[fields[0]] and not np.array_equal(bags[b], rows):
                    raise StoreError(
                        f"shared bag fields {fields[0]} and {b} of {name}: "
                        "rows differ (one row column per side table)"
                    )
        for b, cols in self.bags.items():
            cols.check(n, *bags[b])
        for b, cols in self.bags.items():
            cols.append(n, *bags[b])
        for name, (_, col, _) in self.row_cols.items():
            col.append(side_rows[name])
        self.labels.append(labels)
        self.sparse.append(sparse)
        self.dense.append(dense)
        self.rows += n
        self.positives += np.asarray(labels, np.int64).sum(axis=0)

    def close(self) -> dict:
        """Closes the columns; returns the split's manifest entry {"rows", "positive_rate" [T]}."""
        for col in (self.labels, self.sparse, self.dense):
            col.close()
        for cols in self.bags.values():
            cols.close()
        for _, col, _ in self.row_cols.values():
            col.close()
        rate = self.positives / max(self.rows, 1)
        return {"rows": self.rows, "positive_rate": [float(r) for r in rate]}


def write_manifest(root: Path, manifest: dict) -> None:
    """Writes manifest.json with every column's size, dtype, shape and SHA-256 ("columns"), so
    a store modified later is refused (integrity.py); the columns are read once to hash them."""
    columns = integrity.column_records(root)
    full = {"format_version": FORMAT_VERSION, **manifest, "columns": columns}
    tmp = root / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(full, indent=2) + "\n")
    os.replace(tmp, root / MANIFEST)  # atomic: the store counts as finished only from here


def reusable(out: Path, matches: Callable[[dict], bool], entries: set[str]) -> dict | None:
    """The manifest of a finished store at `out` that `matches` (made from the same inputs and
    options); None if there is nothing at `out` or only what an interrupted conversion leaves
    (names in `entries`). A finished store from other inputs, or anything else, is refused
    (StoreError)."""
    if is_finished(out):
        manifest = read_manifest(out)
        if matches(manifest):
            return manifest
        raise StoreError(f"{out} holds a store made from other files or options; remove it")
    if out.exists() and (not out.is_dir() or {e.name for e in out.iterdir()} - entries):
        raise StoreError(f"{out} exists and is not a store; refusing to replace it")
    return None


def one_writer(out: Path, command: str = "autoheri prepare"):
    """The OS lock of the store at `out` (workdir_lock.py, a sibling lock file), for a
    converter's whole check-then-build: a second conversion to `out` is refused at once,
    naming the first one's PID, instead of interleaving its columns with the first's."""
    return workdir_lock.holding(workdir_lock.beside(out), Path(out).resolve(), command)


@contextlib.contextmanager
def building(out: Path) -> Iterator[Path]:
    """A temporary directory beside `out` for a converter to write a whole store into (columns,
    vocabularies, manifest last); renamed to `out` when the body returns, removed if it raises.
    A reader of `out` therefore sees no store or a finished one, never a part of one."""
    tmp = safe_output.new_dir_beside(Path(out).resolve())
    try:
        yield tmp
        safe_output.replace_dir(tmp, Path(out).resolve())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def is_finished(root: str | Path) -> bool:
    """Whether `root` holds a manifest (written last, so the store is complete)."""
    return (Path(root) / MANIFEST).is_file()


def reset_unfinished(root: Path) -> None:
    """Removes a half-written store (no manifest) so a crashed conversion restarts cleanly."""
    if root.exists() and not is_finished(root):
        shutil.rmtree(root)


def read_manifest(root: str | Path) -> dict:
    """The finished store's manifest.json as a dict; StoreError naming the path when the
    store is missing or unfinished, or its manifest is unreadable or of another format_version."""
    root = Path(root)
    path = root / MANIFEST
    if not root.is_dir():
        raise StoreError(f"store not found: {root}")
    if not path.is_file():
        raise StoreError(
            f"{root} is not a finished store (no {MANIFEST}; an interrupted conversion?)"
        )
    manifest = integrity.load_manifest(path)  # truncated / not JSON: one line naming it
    if manifest.get("format_version") != FORMAT_VERSION:
        raise StoreError(
            f"{path}: format_version {manifest.get('format_version')} != {FORMAT_VERSION}"
        )
    return manifest


def _load(path: Path, expect_rows: int | None = None) -> np.ndarray:
    if not path.is_file():
        raise StoreError(f"store column missing: {path}")
    arr = np.load(path, mmap_mode="r")
    if expect_rows is not None and arr.shape[0] != expect_rows:
        raise StoreError(f"{path}: {arr.shape[0]} rows, manifest says {expect_rows}")
    return arr


def _side_table(root: Path, manifest: dict, name: str) -> tuple[Path, int]:
    """The directory and row count of side table `name`, checked against the manifest."""
    sides = manifest.get("side_tables", {})
    if name not in sides or not name.startswith(SIDE_PREFIX) or Path(name).name != name:
        raise StoreError(f"{root / MANIFEST}: bag table {name!r} is not a listed side table")
    return root / name, int(sides[name]["rows"])


def _bag(d: Path, field: str, vocab_size: int, bag_rows: int, row_of=None) -> BagField:
    offsets = _load(d / f"bag.{field}.offsets.npy", bag_rows + 1)
    ids, values = _load(d / f"bag.{field}.ids.npy"), _load(d / f"bag.{field}.values.npy")
    if not len(ids) == len(values) == int(offsets[-1]):
        raise StoreError(
            f"{d}: bag field {field} has {len(ids)} ids, {len(values)} values and "
            f"offsets ending at {int(offsets[-1])}"
        )
    return BagField(field, vocab_size, offsets[:-1], offsets[1:], ids, values, row_of)


def open_split(root: str | Path, split: str, manifest: dict | None = None) -> CTRDataset:
    """Memory-maps one split as a CTRDataset (nothing is read until a batch is gathered).

    A field shared through a side table becomes a BagField whose CSR arrays are the side
    table's and whose row_of is the split's <side name>.row.npy. Every column's header, size
    and value ranges are checked first (hashes only inside `integrity.verifying()`):
    StoreError naming the file, or the split when the store has none of that name."""
    root = Path(root)
    manifest = manifest or read_manifest(root)
    if split not in manifest["splits"]:
        raise StoreError(f"{root}: no split {split!r}; has {sorted(manifest['splits'])}")
    # every column's header and size first (cheap), so the memory maps below never see a
    # truncated or replaced file; the hashes only under --verify here (sources.py: per workdir)
    integrity.check_columns(root, manifest, integrity.split_columns(manifest, split))
    if integrity.forced():
        integrity.verify(root, manifest)
    column_ranges.check_split(root, manifest, split)
    rows = manifest["splits"][split]["rows"]
    d = root / split
    vocab = manifest["vocab_sizes"]
    tables = manifest.get("bag_tables", {}).get(split, {})
    row_of = {}  # side table -> the split's row column, one memmap shared by its fields
    bags = []
    for b in manifest["bag_fields"]:
        if b in tables:
            name = tables[b]
            side, side_rows = _side_table(root, manifest, name)
            if name not in row_of:
                row_of[name] = _load(d / f"{name}.row.npy", rows)
            bags.append(_bag(side, b, int(vocab[b]), side_rows, row_of[name]))
        else:
            bags.append(_bag(d, b, int(vocab[b]), rows))
    return CTRDataset(
        sparse=_load(d / "sparse.npy", rows),
        dense=_load(d / "dense.npy", rows),
        labels=_load(d / "labels.npy", rows),
        field_names=tuple(manifest["fields"]),
        vocab_sizes=tuple(int(vocab[f]) for f in manifest["fields"]),
        stage_names=tuple(manifest["stage_names"]),
        dense_names=tuple(manifest["dense_fields"]),
        bags=tuple(bags),
    )
