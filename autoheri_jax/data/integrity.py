"""Is a store still what `prepare` wrote? Its manifest, column headers and SHA-256 hashes.

`store.write_manifest` records every .npy file of the store in the manifest's "columns":
{path relative to the store: {"bytes", "dtype", "shape", "sha256"}}. Three checks use it:

  manifest   a truncated or non-JSON manifest.json, or one without the keys a reader needs,
             is refused naming the file (it is written last, atomically, so only a later
             edit or a damaged disk leaves it so).
  headers    every time a split is opened: each of its columns' .npy header (dtype, shape)
             and file size, against the manifest and against each other. Reads ~128 bytes a
             file, so a truncated, extended, retyped or replaced column never reaches the
             memory map (whose own error names no file).
  hashes     one read of the whole store, so once per workdir: the first load of a store by
             a workdir checks every hash and records it in <workdir>/store_verified.json,
             keyed by the manifest's digest (a re-prepared store has another digest and is
             hashed again); later loads by that workdir skip it. `verifying()` (the CLI's
             --verify) hashes regardless, once per command.

Stores prepared before the hashes were recorded (no "columns") still open: each column's
size is checked against its own .npy header, the label and id ranges as for any store
(column_ranges.py), and one warning says their contents cannot be verified and how to add the
hashes (prepare the store again). Every refusal is one StoreError line naming the file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from pathlib import Path

import numpy as np

from autoheri_jax.data.errors import StoreError
from autoheri_jax.hashing import sha256_file

RECORD = "store_verified.json"  # in a workdir: the stores it has hashed, by manifest digest
REQUIRED = ("stage_names", "fields", "bag_fields", "dense_fields", "vocab_sizes", "splits")
_log = logging.getLogger("autoheri_jax.data.integrity")
_WARNED: set[str] = set()  # older stores already warned about in this process
# --verify: the (store, digest) pairs hashed by this command, so its several loads hash once
_FORCED: ContextVar[set | None] = ContextVar("autoheri_verify", default=None)


def fix(root: Path) -> str:
    """How to recover from a store that changed after it was written (re-running prepare on a
    finished store reuses it, so it has to go first)."""
    return f"the store was modified after prepare; delete {root} and re-run autoheri prepare"


@contextlib.contextmanager
def verifying(on: bool = True) -> Iterator[None]:
    """Within the block, every store opened is hashed (once), whatever its workdir recorded."""
    token = _FORCED.set(set() if on else _FORCED.get())
    try:
        yield
    finally:
        _FORCED.reset(token)


def forced() -> bool:
    """Whether a `verifying()` block is open (stores are hashed whatever was recorded)."""
    return _FORCED.get() is not None


# ------------------------------------------------------------------------------- manifest


def load_manifest(path: Path) -> dict:
    """manifest.json as a dict, or one StoreError line saying what is wrong with the file."""
    recover = f"delete {path.parent} and re-run autoheri prepare"
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise StoreError(f"{path}: unreadable ({e}); {recover}") from None
    try:
        manifest = json.loads(text)
    except json.JSONDecodeError as e:
        # the decoder fails at the end of a cut-off file (or inside its last, cut string)
        cut = e.pos >= len(text.rstrip()) or e.msg.startswith("Unterminated string")
        what = "truncated" if cut else "not valid JSON"
        where = f"{e.msg}: line {e.lineno} column {e.colno}"
        raise StoreError(f"{path}: {what} ({where}); {recover}") from None
    if not isinstance(manifest, dict):
        raise StoreError(f"{path}: not a JSON object; {recover}")
    missing = [k for k in REQUIRED if k not in manifest]
    if missing:
        raise StoreError(f"{path}: missing keys {missing}; {recover}")
    return manifest


def digest(manifest: dict) -> str:
    """What a verification record is keyed by: it covers every column's hash."""
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()


# -------------------------------------------------------------------------------- headers


def read_header(path: Path, root: Path) -> tuple[np.dtype, tuple[int, ...], int]:
    """dtype, shape and data offset of a .npy file, reading only its header; StoreError
    (saying how to recover the store at `root`) when it is unreadable or Fortran-ordered."""
    try:
        with path.open("rb") as f:
            version = np.lib.format.read_magic(f)
            if version not in ((1, 0), (2, 0)):
                raise ValueError(f".npy version {version}")
            read = np.lib.format.read_array_header_1_0
            if version == (2, 0):
                read = np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read(f)
            offset = f.tell()
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        raise StoreError(f"{path}: unreadable .npy header ({e}): {fix(root)}") from None
    if fortran:  # the readers index rows of C-ordered memory maps
        raise StoreError(f"{path}: Fortran-ordered column: {fix(root)}")
    return dtype, shape, offset


def column_record(path: Path) -> dict:
    """The manifest's record of one .npy column: its bytes, dtype, shape and SHA-256."""
    dtype, shape, _ = read_header(path, path.parent)
    return {
        "bytes": path.stat().st_size,
        "dtype": dtype.str,
        "shape": list(shape),
        "sha256": sha256_file(path),
    }


def column_records(root: Path) -> dict:
    """The manifest's "columns": every .npy under the store (splits, side tables, vocabularies),
    hashed in blocks; "_"-prefixed directories are a converter's scratch space."""
    paths = sorted(
        p
        for p in root.rglob("*.npy")
        if not any(part.startswith("_") for part in p.relative_to(root).parts)
    )
    return {p.relative_to(root).as_posix(): column_record(p) for p in paths}


def split_columns(manifest: dict, split: str) -> list[str]:
    """The files (relative to the store) that opening `split` maps."""
    cols = [f"{split}/{name}.npy" for name in ("labels", "sparse", "dense")]
    tables = manifest.get("bag_tables", {}).get(split, {})
    sides = manifest.get("side_tables", {})
    for b in manifest["bag_fields"]:
        where = tables.get(b, split)
        if where != split and (where not in sides or Path(where).name != where):
            continue  # not a listed side table: store.open_split refuses it, naming it
        cols += [f"{where}/bag.{b}.{part}.npy" for part in ("offsets", "ids", "values")]
        if where != split:
            cols.append(f"{split}/{where}.row.npy")
    return list(dict.fromkeys(cols))


def check_columns(root: Path, manifest: dict, relpaths: Iterable[str]) -> None:
    """Each file's size against its .npy header, and both against the manifest's record (if
    the store has one); StoreError at the first missing, truncated or mismatched file."""
    records = manifest.get("columns") or {}
    for rel in relpaths:
        path = root / rel
        if not path.is_file():
            raise StoreError(f"{path}: store column missing: {fix(root)}")
        dtype, shape, offset = read_header(path, root)
        size, need = path.stat().st_size, offset + int(np.prod(shape)) * dtype.itemsize
        if size != need and not dtype.hasobject:  # pickled objects: no size from the header
            what = "truncated" if size < need else "longer than its header says"
            raise StoreError(
                f"{path}: {what}: {size} bytes, its header ({dtype} {shape}) "
                f"needs {need}: {fix(root)}"
            )
        rec = records.get(rel)
        if rec is None:
            continue
        for key, got, want in (
            ("bytes", size, rec["bytes"]),
            ("dtype", dtype.str, np.dtype(rec["dtype"]).str),
            ("shape", list(shape), list(rec["shape"])),
        ):
            if got != want:
                raise StoreError(f"{path}: {key} {got}, manifest.json says {want}: {fix(root)}")


# --------------------------------------------------------------------------------- hashes


def verify(root: str | Path, manifest: dict, record_dir: Path | None = None) -> bool:
    """Checks every column's SHA-256 against the manifest, unless `record_dir` (a workdir)
    recorded this store as verified, or (no record_dir) outside `verifying()`; a workdir then
    records it. -> whether the columns were hashed (False also for a manifest without hashes,
    warned about once). StoreError at the first column that differs."""
    root = Path(root)
    records = manifest.get("columns")
    if records is None:
        _warn_unhashed(root)
        return False
    done = _FORCED.get()
    key = (str(root.resolve()), digest(manifest))
    if done is not None:
        if key in done:
            return False
    elif record_dir is None or _recorded(Path(record_dir), key):
        return False
    t0 = time.perf_counter()
    check_columns(root, manifest, records)  # a truncated file reads as truncated, not a mismatch
    for rel, rec in records.items():
        got = sha256_file(root / rel)
        if got != rec["sha256"]:
            raise StoreError(
                f"{root / rel}: sha256 mismatch (manifest {rec['sha256'][:12]}..., "
                f"file {got[:12]}...): {fix(root)}"
            )
    if done is not None:
        done.add(key)
    if record_dir is not None:
        total = sum(r["bytes"] for r in records.values())
        _record(Path(record_dir), key, len(records), total, time.perf_counter() - t0)
    return True


def _warn_unhashed(root: Path) -> None:
    if str(root) not in _WARNED:
        _WARNED.add(str(root))
        _log.warning(
            f"{root / 'manifest.json'}: no column hashes (prepared by an older autoheri):"
            " sizes, shapes and label / id ranges are checked, contents are not; delete "
            f"{root} and re-run autoheri prepare to add them"
        )


def _read_record(record_dir: Path) -> dict:
    """The workdir's record; an unreadable one is only a cache miss (the store is re-hashed)."""
    try:
        record = json.loads((record_dir / RECORD).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _recorded(record_dir: Path, key: tuple[str, str]) -> bool:
    entry = _read_record(record_dir).get(key[1])
    return isinstance(entry, dict) and entry.get("store") == key[0]


def _record(record_dir: Path, key, columns: int, total: int, seconds: float) -> None:
    record = _read_record(record_dir)
    record[key[1]] = {
        "store": key[0],
        "columns": columns,
        "bytes": total,
        "seconds": round(seconds, 3),
        "verified_at": time.strftime("%FT%T%z"),
    }
    record_dir.mkdir(parents=True, exist_ok=True)
    tmp = record_dir / f"{RECORD}.{os.getpid()}.tmp"  # per process: hosts may share the workdir
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, record_dir / RECORD)
