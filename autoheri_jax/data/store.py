"""The on-disk columnar store every data format is converted into, and its memory-mapped reader.

Layout of a store directory:

  manifest.json                 written last, atomically: its presence marks a finished store
  <split>/labels.npy            int8    [N, T]  cumulative funnel labels
  <split>/sparse.npy            int32   [N, F]  single-valued fields, vocabulary-mapped (0 = rare)
  <split>/dense.npy             float32 [N, Dd]
  <split>/bag.<field>.offsets.npy  int64 [N + 1]  multi-valued field: row r owns ids[o[r]:o[r+1]]
  <split>/bag.<field>.ids.npy      int32 [nnz]
  <split>/bag.<field>.values.npy   float32 [nnz]  feature values (weights for pooling)

Columns are written in chunks through `_NpyAppender` (a .npy file whose header is rewritten with
the final row count), so converting tens of GB never holds more than one chunk in memory. The
reader opens every column with `np.load(mmap_mode="r")`: a batch is one fancy-index gather per
column, and nothing is read until a batch asks for it.

manifest.json holds: format_version, stage_names, fields, bag_fields, dense_fields,
vocab_sizes (field -> size, single and bag), splits (split -> rows, positive_rate), and whatever
the converter adds (source files and hashes, options, bad-row counts).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from autoheri_jax.data.dataset import BagField, CTRDataset

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
_HEADER_BYTES = 128  # fixed .npy header size, so the final shape can be written in place


class StoreError(ValueError):
    """A store is missing, unfinished or inconsistent; the message names the path."""


class _NpyAppender:
    """Appends row chunks to a .npy file; `close` writes the true shape into the header."""

    def __init__(self, path: Path, dtype: np.dtype, row_shape: tuple[int, ...]):
        self.path, self.dtype, self.row_shape, self.rows = path, np.dtype(dtype), row_shape, 0
        self.f = path.open("wb")
        self.f.write(b"\0" * _HEADER_BYTES)

    def append(self, chunk: np.ndarray) -> None:
        chunk = np.ascontiguousarray(chunk, dtype=self.dtype)
        if chunk.shape[1:] != self.row_shape:
            raise StoreError(f"{self.path}: chunk rows {chunk.shape[1:]} != {self.row_shape}")
        self.f.write(chunk.tobytes())
        self.rows += chunk.shape[0]

    def close(self) -> None:
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


class SplitWriter:
    """Streams one split's columns to disk, chunk by chunk."""

    def __init__(
        self, root: Path, num_stages: int, num_fields: int, num_dense: int, bags: Sequence[str]
    ):
        root.mkdir(parents=True, exist_ok=True)
        self.labels = _NpyAppender(root / "labels.npy", np.int8, (num_stages,))
        self.sparse = _NpyAppender(root / "sparse.npy", np.int32, (num_fields,))
        self.dense = _NpyAppender(root / "dense.npy", np.float32, (num_dense,))
        self.bags = {
            b: (
                _NpyAppender(root / f"bag.{b}.offsets.npy", np.int64, ()),
                _NpyAppender(root / f"bag.{b}.ids.npy", np.int32, ()),
                _NpyAppender(root / f"bag.{b}.values.npy", np.float32, ()),
            )
            for b in bags
        }
        self._nnz = dict.fromkeys(bags, 0)
        for off, _, _ in self.bags.values():
            off.append(np.zeros(1, np.int64))
        self.rows = 0
        self.positives: np.ndarray = np.zeros(num_stages, np.int64)

    def append(
        self,
        labels: np.ndarray,
        sparse: np.ndarray,
        dense: np.ndarray,
        bags: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None,
    ) -> None:
        """One chunk of n rows. bags: field -> (lengths [n], ids [sum lengths], values [same])."""
        n = labels.shape[0]
        if sparse.shape[0] != n or dense.shape[0] != n:
            raise StoreError(f"chunk row counts differ: {n}, {sparse.shape[0]}, {dense.shape[0]}")
        bags = bags or {}
        if set(bags) != set(self.bags):
            raise StoreError(f"chunk bag fields {sorted(bags)} != store's {sorted(self.bags)}")
        self.labels.append(labels)
        self.sparse.append(sparse)
        self.dense.append(dense)
        for b, (lengths, ids, values) in bags.items():
            lengths = np.asarray(lengths, np.int64)
            if lengths.shape != (n,) or int(lengths.sum()) != len(ids) or len(ids) != len(values):
                raise StoreError(f"bag field {b}: lengths / ids / values do not agree")
            off, id_col, val_col = self.bags[b]
            off.append(self._nnz[b] + np.cumsum(lengths))
            id_col.append(ids)
            val_col.append(values)
            self._nnz[b] += len(ids)
        self.rows += n
        self.positives += np.asarray(labels, np.int64).sum(axis=0)

    def close(self) -> dict:
        for col in (self.labels, self.sparse, self.dense):
            col.close()
        for cols in self.bags.values():
            for col in cols:
                col.close()
        rate = self.positives / max(self.rows, 1)
        return {"rows": self.rows, "positive_rate": [float(r) for r in rate]}


def write_manifest(root: Path, manifest: dict) -> None:
    tmp = root / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps({"format_version": FORMAT_VERSION, **manifest}, indent=2) + "\n")
    os.replace(tmp, root / MANIFEST)  # atomic: the store counts as finished only from here


def is_finished(root: str | Path) -> bool:
    return (Path(root) / MANIFEST).is_file()


def reset_unfinished(root: Path) -> None:
    """Removes a half-written store (no manifest) so a crashed conversion restarts cleanly."""
    if root.exists() and not is_finished(root):
        shutil.rmtree(root)


def read_manifest(root: str | Path) -> dict:
    root = Path(root)
    path = root / MANIFEST
    if not root.is_dir():
        raise StoreError(f"store not found: {root}")
    if not path.is_file():
        raise StoreError(
            f"{root} is not a finished store (no {MANIFEST}; an interrupted conversion?)"
        )
    manifest = json.loads(path.read_text())
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


def open_split(root: str | Path, split: str, manifest: dict | None = None) -> CTRDataset:
    """Memory-maps one split as a CTRDataset (nothing is read until a batch is gathered)."""
    root = Path(root)
    manifest = manifest or read_manifest(root)
    if split not in manifest["splits"]:
        raise StoreError(f"{root}: no split {split!r}; has {sorted(manifest['splits'])}")
    rows = manifest["splits"][split]["rows"]
    d = root / split
    vocab = manifest["vocab_sizes"]
    bags = []
    for b in manifest["bag_fields"]:
        offsets = _load(d / f"bag.{b}.offsets.npy", rows + 1)
        bags.append(
            BagField(
                name=b,
                vocab_size=int(vocab[b]),
                starts=offsets[:-1],
                ends=offsets[1:],
                ids=_load(d / f"bag.{b}.ids.npy"),
                values=_load(d / f"bag.{b}.values.npy"),
            )
        )
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
