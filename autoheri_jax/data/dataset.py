"""The in-memory impression container every model and metric reads.

Shape contract (N impressions, F sparse fields, Dd dense features, T funnel stages):

  sparse      int32   [N, F]   per-field ids in [0, vocab_sizes[f]); id 0 is "unknown / rare".
  dense       float32 [N, Dd]  Dd may be 0.
  labels      f32/i8  [N, T]   cumulative funnel labels: labels[:, k] = 1 iff the
                               impression reached stage k (clicked; clicked and converted).
                               Non-increasing along k: a later stage is only observed after
                               the earlier one.
  bags        per multi-valued field, CSR ids / values (see BagField), per row or shared
                               through row_of; a batch pads them to
                               bag_ids / bag_values / bag_mask [B, Fb, max_bag_len].
  true_probs  float32 [N, T] or None. Conditional truth P(stage k | stage k-1 reached), known only
                               for simulated data; evaluation turns it into the oracle score.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator, Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class BagField:
    """A multi-valued field (e.g. 150_14) in CSR form: bag row k owns ids[starts[k]:ends[k]].

    starts / ends int64 [K] index into ids int32 [nnz] and values float32 [nnz] (the raw
    feature values, usable as pooling weights). Bags may be empty.

    row_of None (per-row bags): K = N and dataset row r owns bag row r.
    row_of int32 / int64 [N] (shared bags): dataset row r owns bag row row_of[r], so many rows
    can share one bag (e.g. every impression of a user shares that user's 150_14 bag, stored
    once in a side table); K is the side table's row count, unrelated to N.
    """

    name: str
    vocab_size: int
    starts: np.ndarray
    ends: np.ndarray
    ids: np.ndarray
    values: np.ndarray
    row_of: np.ndarray | None = None

    @property
    def num_rows(self) -> int:
        """Dataset rows this field covers (N)."""
        return len(self.starts if self.row_of is None else self.row_of)

    def take(self, idx: np.ndarray | slice) -> BagField:
        """The field of dataset rows `idx` (a shared table stays whole; row_of is indexed)."""
        if self.row_of is not None:  # the shared CSR table stays whole; only the mapping moves
            return dataclasses.replace(self, row_of=self.row_of[idx])
        return dataclasses.replace(self, starts=self.starts[idx], ends=self.ends[idx])

    def bag_rows(self, idx: np.ndarray) -> np.ndarray:
        """The bag rows (indices into starts / ends) of dataset rows idx."""
        return np.asarray(idx if self.row_of is None else self.row_of[idx])

    def row(self, r: int) -> tuple[np.ndarray, np.ndarray]:
        """Ids and values of dataset row r's whole bag (no truncation)."""
        k = r if self.row_of is None else int(self.row_of[r])
        a, b = int(self.starts[k]), int(self.ends[k])
        return np.asarray(self.ids[a:b]), np.asarray(self.values[a:b])

    def gather(
        self, idx: np.ndarray, max_len: int, bag_rows: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Padded [B, max_len] ids, values and mask of rows idx (longer bags are truncated).
        `bag_rows`: self.bag_rows(idx) if the caller already has it."""
        k = self.bag_rows(idx) if bag_rows is None else bag_rows
        start = np.asarray(self.starts[k], np.int64)
        length = np.minimum(np.asarray(self.ends[k], np.int64) - start, max_len)
        mask = np.arange(max_len)[None, :] < length[:, None]
        if len(self.ids) == 0:
            z = np.zeros(mask.shape, np.int32)
            return z, z.astype(np.float32), mask.astype(np.float32)
        pos = np.where(mask, start[:, None] + np.arange(max_len)[None, :], 0)
        ids = np.where(mask, self.ids[pos], 0).astype(np.int32)
        values = np.where(mask, self.values[pos], 0.0).astype(np.float32)
        return ids, values, mask.astype(np.float32)


@dataclasses.dataclass(frozen=True)
class CTRDataset:
    """N impressions under the module docstring's shape contract; ValueError where a shape,
    an in-memory id or the labels' order breaks it (a memory-mapped store's values were
    checked when it was written and opened, not here)."""

    sparse: np.ndarray
    dense: np.ndarray
    labels: np.ndarray
    field_names: tuple[str, ...]
    vocab_sizes: tuple[int, ...]
    stage_names: tuple[str, ...]
    true_probs: np.ndarray | None = None
    dense_names: tuple[str, ...] = ()
    bags: tuple[BagField, ...] = ()
    max_bag_len: int = 32  # bag entries kept per row in a batch (longer bags are truncated)

    def __post_init__(self):
        n = self.sparse.shape[0]
        if self.sparse.ndim != 2 or self.sparse.dtype != np.int32:
            raise ValueError(
                f"sparse must be int32 [N, F], got {self.sparse.dtype} {self.sparse.shape}"
            )
        if self.sparse.shape[1] != len(self.field_names) or len(self.vocab_sizes) != len(
            self.field_names
        ):
            raise ValueError(
                f"sparse has {self.sparse.shape[1]} fields but field_names has "
                f"{len(self.field_names)} and vocab_sizes {len(self.vocab_sizes)}"
            )
        if self.dense.ndim != 2 or self.dense.shape[0] != n or self.dense.dtype != np.float32:
            raise ValueError(
                f"dense must be float32 [{n}, Dd], got {self.dense.dtype} {self.dense.shape}"
            )
        if self.labels.shape != (n, len(self.stage_names)):
            raise ValueError(
                f"labels must be [{n}, {len(self.stage_names)}], got {self.labels.shape}"
            )
        if self.true_probs is not None and self.true_probs.shape != self.labels.shape:
            raise ValueError(f"true_probs {self.true_probs.shape} != labels {self.labels.shape}")
        for b in self.bags:
            if b.row_of is None:
                if b.starts.shape != (n,) or b.ends.shape != (n,):
                    raise ValueError(f"bag field {b.name}: starts/ends must be [{n}]")
                continue
            if b.row_of.shape != (n,) or b.row_of.dtype.kind not in "iu":
                raise ValueError(
                    f"bag field {b.name}: row_of must be integer [{n}], got "
                    f"{b.row_of.dtype} {b.row_of.shape}"
                )
            if b.starts.ndim != 1 or b.starts.shape != b.ends.shape:
                raise ValueError(f"bag field {b.name}: starts/ends must be equal-length 1-D")
            if n and not isinstance(b.row_of, np.memmap):  # a store checked it when written
                lo, hi = int(b.row_of.min()), int(b.row_of.max())
                if lo < 0 or hi >= len(b.starts):
                    raise ValueError(
                        f"bag field {b.name}: row_of spans [{lo}, {hi}], outside the "
                        f"{len(b.starts)} bag rows"
                    )
        if isinstance(self.labels, np.memmap):
            return  # a store was validated when written; scanning it here would read it all
        if n and self.sparse.shape[1]:
            bad = (self.sparse < 0) | (self.sparse >= np.asarray(self.vocab_sizes, np.int64))
            if bad.any():
                row, f = (int(i[0]) for i in np.nonzero(bad))
                raise ValueError(
                    f"row {row}: field {self.field_names[f]} id {int(self.sparse[row, f])} is "
                    f"outside its vocabulary [0, {self.vocab_sizes[f]})"
                )
        for b in self.bags:
            if len(b.ids) and not isinstance(b.ids, np.memmap):
                lo, hi = int(b.ids.min()), int(b.ids.max())
                if lo < 0 or hi >= b.vocab_size:
                    raise ValueError(
                        f"bag field {b.name}: ids span [{lo}, {hi}], outside its vocabulary "
                        f"[0, {b.vocab_size})"
                    )
        if n and np.any(np.diff(self.labels, axis=1) > 0):
            row = int(np.argmax(np.any(np.diff(self.labels, axis=1) > 0, axis=1)))
            raise ValueError(f"row {row}: a later funnel stage is positive without the earlier one")

    @property
    def num_rows(self) -> int:
        return int(self.sparse.shape[0])

    @property
    def num_stages(self) -> int:
        return len(self.stage_names)

    @property
    def num_dense(self) -> int:
        return int(self.dense.shape[1])

    @property
    def bag_vocab_sizes(self) -> tuple[int, ...]:
        return tuple(b.vocab_size for b in self.bags)

    def take(self, idx: np.ndarray | slice) -> CTRDataset:
        """The dataset of rows `idx` (an index array or a slice) of every column."""
        return dataclasses.replace(
            self,
            bags=tuple(b.take(idx) for b in self.bags),
            sparse=self.sparse[idx],
            dense=self.dense[idx],
            labels=self.labels[idx],
            true_probs=None if self.true_probs is None else self.true_probs[idx],
        )

    def split(self, sizes: Sequence[int]) -> tuple[CTRDataset, ...]:
        """Consecutive row ranges of the given sizes (rows are i.i.d., so no shuffle is needed)."""
        if sum(sizes) > self.num_rows:
            raise ValueError(f"split sizes {tuple(sizes)} exceed {self.num_rows} rows")
        bounds = np.cumsum([0, *sizes])
        return tuple(self.take(slice(a, b)) for a, b in itertools.pairwise(bounds))

    def batch(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        """One batch gathered by row index `idx` [B]: "sparse" int32 [B, F], "dense" [B, Dd],
        "labels" float32 [B, T] and, with bag fields, "bag_ids" int32 / "bag_values" /
        "bag_mask" float32 [B, Fb, max_bag_len]. A memory-mapped dataset gathers the rows
        sorted, so the batch's row order is idx's only for an in-memory one."""
        idx = np.sort(idx) if isinstance(self.sparse, np.memmap) else idx  # sequential reads
        batch = {
            "sparse": np.asarray(self.sparse[idx]),
            "dense": np.asarray(self.dense[idx]),
            "labels": np.asarray(self.labels[idx], np.float32),
        }
        if self.bags:
            # Fields of one side table share its row_of: look each mapping up once per batch.
            rows: dict[int, np.ndarray] = {}
            for b in self.bags:
                if id(b.row_of) not in rows:
                    rows[id(b.row_of)] = b.bag_rows(idx)
            parts = [b.gather(idx, self.max_bag_len, rows[id(b.row_of)]) for b in self.bags]
            batch["bag_ids"] = np.stack([p[0] for p in parts], axis=1)  # [B, Fb, L]
            batch["bag_values"] = np.stack([p[1] for p in parts], axis=1)
            batch["bag_mask"] = np.stack([p[2] for p in parts], axis=1)
        return batch

    def summary(self) -> dict:
        """Row, field and dense counts, the stage names and each stage's positive rate."""
        rates = self.labels.mean(axis=0) if self.num_rows else np.zeros(self.num_stages)
        return {
            "rows": self.num_rows,
            "fields": len(self.field_names),
            "bag_fields": len(self.bags),
            "dense": self.num_dense,
            "stages": list(self.stage_names),
            "positive_rate": {s: float(r) for s, r in zip(self.stage_names, rates, strict=True)},
        }


def eval_batch_indices(num_rows: int, batch_size: int) -> Iterator[tuple[np.ndarray, int]]:
    """Exact full pass: (indices padded to batch_size, number of real rows) per batch.

    Padding repeats the last row, and callers drop the padded tail, so every row counts once
    while the jitted predict function still sees one static shape.
    """
    for start in range(0, num_rows, batch_size):
        idx = np.arange(start, min(start + batch_size, num_rows))
        valid = len(idx)
        if valid < batch_size:
            idx = np.concatenate([idx, np.full(batch_size - valid, idx[-1], dtype=idx.dtype)])
        yield idx, valid
