"""Rows to score, from any supported format, with the raw id behind every stored index.

A file is converted by the same code as `autoheri prepare` (so bad rows are refused or skipped
and counted exactly as there) into a throwaway store whose vocabularies are built from that file
alone with min_count 1 and no validation carve: every id of the file keeps its own index, row
order is the file's, and index 0 only marks a field the row does not have. The stored index k
of a field is raw id vocab[k - 1], which predict.py maps through the export's vocabularies.
Label columns are optional (labels="optional" in convert_processed): scoring needs features
only, so a processed file without them is read with zero labels, which predict never reads, and
its rows score exactly as the same rows with labels; prepare / training still refuse it.

  processed file (rechub_aliccp, paddle_aitm, paddle_esmm, aliexpress)   that file
  raw Ali-CCP directory    its test pair (sample_skeleton_test + common_features_test), or the
                           train pair when there is no test pair; each pair is converted as a
                           store's train split (the converter reads both pairs, so the pair is
                           linked in as both, and skip counts are those of two passes)
  store (`autoheri prepare`)   one split (default test), read in place through its vocabularies
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from autoheri_jax.data.dataset import CTRDataset
from autoheri_jax.data.errors import DataFormatError
from autoheri_jax.data.sources import resolve_format
from autoheri_jax.data.store import open_split, read_manifest
from autoheri_jax.data.vocab import load_vocabularies


@dataclasses.dataclass(frozen=True)
class ScoringData:
    """What `open_rows` read: the rows to score and how to read their indices back as raw ids."""

    rows: CTRDataset  # the rows to score, as stored indices
    vocabs: dict[str, np.ndarray]  # field -> raw ids: stored index k is vocabs[field][k - 1]
    format: str
    bad_rows: dict  # reason -> rows skipped (--on-bad-row skip)
    source: str  # what was read, for messages


def _raw_pair(src: Path, link_dir: Path) -> str:
    """Links the pair to score as both pairs of a raw directory; returns which pair it was."""
    pair = "test" if (src / "sample_skeleton_test.csv").is_file() else "train"
    link_dir.mkdir(parents=True)
    for kind in ("sample_skeleton", "common_features"):
        target = src / f"{kind}_{pair}.csv"
        if not target.is_file():
            raise DataFormatError(target, None, "no such file", "a raw Ali-CCP input is missing")
        for as_split in ("train", "test"):
            (link_dir / f"{kind}_{as_split}.csv").symlink_to(target)
    return pair


def open_rows(
    path: str | Path,
    tmp_dir: str | Path,
    *,
    fmt: str = "auto",
    on_bad_row: str = "strict",
    split: str = "test",
    progress: bool = True,
) -> ScoringData:
    """The rows of `path` (see the module doc); a conversion is written under tmp_dir.

    fmt: the input's format ("auto": detected); on_bad_row: strict or skip, as in prepare;
    split: the split read from a store. DataFormatError for a missing or malformed input (or a
    directory of a processed format), StoreError for an unusable store."""
    src = Path(path).expanduser().resolve()
    if not src.exists():
        raise DataFormatError(src, None, "no such file or directory")
    fmt = resolve_format(src, fmt)
    tmp = Path(tmp_dir)
    source = str(src)
    if fmt == "store":
        root = src
    elif fmt == "aliccp_raw":
        from autoheri_jax.data.aliccp_raw import prepare_aliccp_raw

        pair = _raw_pair(src, tmp / "raw")
        root, split, source = tmp / "store", "train", f"{src} ({pair} files)"
        prepare_aliccp_raw(
            tmp / "raw",
            root,
            min_count=1,
            valid_fraction=0.0,
            on_bad_row=on_bad_row,
            progress=progress,
        )
    else:
        from autoheri_jax.data.formats import convert_processed

        if src.is_dir():
            why = "predict scores one file of this format; pass the file itself"
            raise DataFormatError(src, None, "a directory", why)
        root, split = tmp / "store", "train"
        convert_processed(
            src,
            root,
            fmt=fmt,
            min_count=1,
            valid_fraction=0.0,
            on_bad_row=on_bad_row,
            progress=progress,
            labels="optional",
        )
    manifest = read_manifest(root)
    rows = open_split(root, split, manifest)
    vocabs = load_vocabularies(root, [*rows.field_names, *(b.name for b in rows.bags)])
    fmt = manifest.get("format", fmt) if fmt == "store" else fmt
    return ScoringData(rows, vocabs, fmt, dict(manifest.get("bad_rows", {})), source)
