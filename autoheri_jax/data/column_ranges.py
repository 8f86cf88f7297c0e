"""Label and id ranges of a store's columns, checked chunk by chunk over the memory maps.

A column can pass its header and hash checks (integrity.py) and still hold values training
must not see: a store prepared before hashes were recorded and edited since, a workdir that
verified the hashes before the edit, or a converter bug. Opening a split checks what the model
assumes of every column:

  labels    0 or 1, and cumulative along the stages (a later stage only where the earlier one
            is 1: dataset.py's contract, which the losses' stage masks rely on)
  sparse    column f's ids in [0, vocab_sizes[field f]) (out of range, the embedding gather
            would clamp it silently into another id's row)
  bag ids   in [0, vocab_sizes[field]); offsets start at 0 and never decrease
  row       a split's side-table row column in [0, the side table's rows)

Each column is read in chunks of about CHUNK_BYTES, reduced per column with min / max (one
vectorised pass), so a memory-mapped store of any size is never copied whole; the first bad
value stops the run with one line naming the file, the column, the row and the value.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from autoheri_jax.data.errors import StoreError
from autoheri_jax.data.integrity import fix

CHUNK_BYTES = 64 << 20


def _chunks(arr: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """(first row, rows) blocks of about CHUNK_BYTES; each block is read once."""
    row_bytes = max(1, arr.itemsize * int(np.prod(arr.shape[1:])))
    step = max(1, CHUNK_BYTES // row_bytes)
    for start in range(0, arr.shape[0], step):
        yield start, np.asarray(arr[start : start + step])


def check_labels(path: Path, root: Path, labels: np.ndarray, stages: Sequence[str]) -> None:
    """labels [N, T] (`stages`: the T stage names) are 0 / 1 and cumulative along the stages;
    StoreError naming `path`, the row and the column, with how to recover the store at `root`."""
    for start, c in _chunks(labels):
        bad = (c != 0) & (c != 1)
        if bad.any():
            r, k = (int(i) for i in np.argwhere(bad)[0])
            raise StoreError(
                f"{path}: column {k} ({stages[k]}) has label {c[r, k]} at row "
                f"{start + r}; labels must be 0 or 1: {fix(root)}"
            )
        rises = c[:, 1:] > c[:, :-1]
        if rises.any():
            r, k = (int(i) for i in np.argwhere(rises)[0])
            raise StoreError(
                f"{path}: row {start + r} has {stages[k + 1]}=1 (column {k + 1}) "
                f"with {stages[k]}=0; labels must be cumulative: {fix(root)}"
            )


def check_ids(
    path: Path,
    root: Path,
    ids: np.ndarray,
    sizes: Sequence[int],
    names: Sequence[str],
    bound: str = "vocab_sizes in manifest.json",
) -> None:
    """ids [N, F] (column f in [0, sizes[f])) or [nnz] (one field: sizes and names of one);
    StoreError naming `path`, the field, the row, the id and `bound` (where the sizes come from)."""
    table = ids if ids.ndim == 2 else ids.reshape(-1, 1)
    upper = np.asarray(sizes, np.int64)
    for start, c in _chunks(table):
        if not c.size:
            continue
        bad = (c.min(axis=0) < 0) | (c.max(axis=0) >= upper)
        if bad.any():
            j = int(np.argmax(bad))
            col = c[:, j]
            r = int(np.argmax((col < 0) | (col >= upper[j])))
            where = f"column {j} (field {names[j]})" if ids.ndim == 2 else f"field {names[j]}"
            raise StoreError(
                f"{path}: {where} has id {col[r]} at row {start + r}, outside "
                f"[0, {upper[j]}) ({bound}): {fix(root)}"
            )


def check_offsets(path: Path, root: Path, offsets: np.ndarray) -> None:
    """A bag's CSR offsets [K + 1] start at 0 and never decrease; StoreError naming `path`."""
    previous = 0  # the row before each chunk's first; offsets[0] must be 0
    for start, c in _chunks(offsets):
        steps = np.diff(c, prepend=previous)
        if (steps < 0).any():
            r = int(np.argmax(steps < 0))
            what = f"starts at {c[0]}, not 0" if start + r == 0 else f"decrease at row {start + r}"
            raise StoreError(f"{path}: bag offsets {what}: {fix(root)}")
        previous = c[-1]


def _load(path: Path) -> np.ndarray:
    return np.load(path, mmap_mode="r")


def check_split(root: Path, manifest: dict, split: str) -> None:
    """Every range above for the columns `split` reads (after integrity.check_columns), with
    `manifest` the store's manifest.json; StoreError at the first bad value."""
    d = root / split
    check_labels(d / "labels.npy", root, _load(d / "labels.npy"), manifest["stage_names"])
    vocab = manifest["vocab_sizes"]
    fields = manifest["fields"]
    check_ids(d / "sparse.npy", root, _load(d / "sparse.npy"), [vocab[f] for f in fields], fields)
    tables = manifest.get("bag_tables", {}).get(split, {})
    sides = manifest.get("side_tables", {})
    for b in manifest["bag_fields"]:
        where = tables.get(b, split)
        if where != split and where not in sides:
            continue  # store.open_split refuses it, naming it
        bag = root / where
        check_offsets(bag / f"bag.{b}.offsets.npy", root, _load(bag / f"bag.{b}.offsets.npy"))
        check_ids(bag / f"bag.{b}.ids.npy", root, _load(bag / f"bag.{b}.ids.npy"), [vocab[b]], [b])
    for name in dict.fromkeys(t for t in tables.values() if t in sides):
        path = d / f"{name}.row.npy"
        rows = int(sides[name]["rows"])
        check_ids(path, root, _load(path), [rows], [name], f"rows of {name} in manifest.json")
