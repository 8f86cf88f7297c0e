"""Evaluation batches: every row once, in order, with each bag pooled once per batch.

A training batch pads every bag field to [B, max_bag_len] (data.dataset.CTRDataset.batch), so
a row pays max_bag_len lookups per field whatever its bag holds, and the impressions of one
user (a shared bag: BagField.row_of) each pay for the same bag again. Evaluation has no
gradient to scatter back, so its batch can carry each distinct bag once:

  sparse   int32 [B, F], dense float32 [B, Dd] (as in training batches)
  bags     one dict per bag field, in the dataset's order:
             ids int32 [S, L], values float32 [S, L], mask float32 [S, L]: S bags padded to L
             slot int32 [B] (shared fields only): row b's bag is bag slot[b]
           A per-row field has S = B (row b's bag is bag b) and no slot. A shared field's S
           bags are the distinct side-table rows of the batch (fields of one side table share
           them). L is the longest bag of the field in the batch (after truncation to the
           dataset's max_bag_len).

S and L are rounded up to powers of two (at least 8, at most B and max_bag_len) and never
shrink during a pass, so a pass meets a few static shapes (one compilation each), and the
padding adds masked entries only: the pooled vectors are the training batch's up to float
rounding (a sum over fewer zero terms). Assembly is vectorised per field (one gather of the
batch's bag rows, one of their entries), never a Python loop over rows.

`EvalBatches` iterates a dataset in consecutive row ranges; the last batch is padded to B by
repeating its last row, so every batch has the same B and callers keep the first `valid` rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import numpy as np

from autoheri_jax.data.dataset import BagField, CTRDataset

MIN_BUCKET = 8


def bucket(n: int, top: int) -> int:
    """n rounded up to a power of two, at least MIN_BUCKET (or top, if smaller), at most top."""
    return min(max(MIN_BUCKET, 1 << max(int(n) - 1, 0).bit_length()), top)


class EvalBatch(NamedTuple):
    """One batch of an evaluation pass, B rows of which the first `valid` are real."""

    inputs: dict  # sparse, dense and (with bag fields) bags, as the module docstring says
    valid: int  # real rows in this batch (the rest repeat the last row)


def _pad_rows(x: np.ndarray, size: int) -> np.ndarray:
    """x [n, ...] -> [size, ...], the last row repeated (x as it is when n == size)."""
    x = np.asarray(x)
    if len(x) == size:
        return x
    return np.concatenate([x, np.repeat(x[-1:], size - len(x), axis=0)])


def _bag_part(field: BagField, bag_rows: np.ndarray, max_len: int, floor: int) -> dict:
    """ids, values and mask [len(bag_rows), L] of the given bag rows, L bucketed (>= floor)."""
    longest = int(np.max(np.asarray(field.ends[bag_rows]) - np.asarray(field.starts[bag_rows])))
    length = max(bucket(min(longest, max_len), max_len), floor)
    ids, values, mask = field.gather(bag_rows, length, bag_rows=bag_rows)
    return {"ids": ids, "values": values, "mask": mask}


class EvalBatches:
    """Consecutive batches of `batch_size` rows over all of `data` (the last one padded).

    A bucketed size (a field's L, a side table's S) never shrinks from one batch to the next,
    so a pass compiles once per increase (a few at most), not once per batch: the last, short
    batch reuses the shapes before it."""

    def __init__(self, data: CTRDataset, batch_size: int):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.data = data
        self.batch_size = min(batch_size, max(data.num_rows, 1))
        self._floor: dict = {}  # ("L", field index) or ("S", side table) -> largest size so far

    def __len__(self) -> int:
        return -(-self.data.num_rows // self.batch_size)

    def _grow(self, key, size: int) -> int:
        self._floor[key] = max(self._floor.get(key, 0), size)
        return self._floor[key]

    def _part(self, f: int, bag_rows: np.ndarray) -> dict:
        part = _bag_part(
            self.data.bags[f], bag_rows, self.data.max_bag_len, self._floor.get(("L", f), 0)
        )
        self._grow(("L", f), part["ids"].shape[1])
        return part

    def bag_inputs(self, rows: np.ndarray) -> list[dict]:
        """The `bags` entry (module docstring: per field ids / values / mask [S, L], slot [B]
        for a shared field) of the batch of dataset rows `rows` [B] (padded already)."""
        out, shared = [], {}  # id(row_of) -> (distinct bag rows padded to S, slot of each row)
        for f, field in enumerate(self.data.bags):
            if field.row_of is None:
                out.append(self._part(f, rows))
                continue
            key = id(field.row_of)
            if key not in shared:
                distinct, slot = np.unique(np.asarray(field.row_of[rows]), return_inverse=True)
                size = self._grow(("S", key), bucket(len(distinct), len(rows)))
                shared[key] = (_pad_rows(distinct, size), slot.astype(np.int32).ravel())
            distinct, slot = shared[key]
            out.append({**self._part(f, distinct), "slot": slot})
        return out

    def batch(self, start: int) -> EvalBatch:
        """The batch of rows [start, start + batch_size), padded to B = batch_size rows."""
        d, size = self.data, self.batch_size
        stop = min(start + size, d.num_rows)
        inputs = {  # contiguous slices of the columns: sequential reads of a memmap
            "sparse": _pad_rows(d.sparse[start:stop], size),
            "dense": _pad_rows(d.dense[start:stop], size),
        }
        if d.bags:
            inputs["bags"] = self.bag_inputs(_pad_rows(np.arange(start, stop), size))
        return EvalBatch(inputs, stop - start)

    def __iter__(self) -> Iterator[EvalBatch]:
        for start in range(0, self.data.num_rows, self.batch_size):
            yield self.batch(start)
