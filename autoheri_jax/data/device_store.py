"""The training split's columns on the device: a batch is gathered there, not on the host.

The host path (pipeline.py) gathers each step's rows with one fancy index per column and
copies the batch to the device. When the columns fit in device memory they can be copied
once (`DeviceStore`) and every batch gathered inside the jitted step from the step's row
indices, which are the same permuted indices (`StepBatchSource.indices`), so the batches are
the same arrays, value for value: `gather` reproduces `CTRDataset.batch`, bags included
(padded to max_bag_len, truncated, mask as float32).

Only the indices ([B] int32 per step) cross to the device; `StepIndices` is the grain source
that yields them, so the iterator's checkpointed position is the host path's and a run can
resume with the store on after it saved with it off, or the other way round.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from autoheri_jax.data.dataset import CTRDataset
from autoheri_jax.data.pipeline import StepBatchSource

AUTO_FRACTION = 0.25  # "auto": the columns may take at most this share of the device memory
CPU_AUTO_BYTES = 2 << 30  # "auto" on a CPU device (no memory limit reported): 2 GiB
_INT32_MAX = 2**31 - 1


def _bag_index_dtype(data: CTRDataset) -> bool:
    """Whether every bag offset fits int32 (JAX's default integer on the device)."""
    return all(len(b.ids) <= _INT32_MAX and len(b.starts) <= _INT32_MAX for b in data.bags)


def columns(data: CTRDataset) -> dict:
    """The host arrays a store holds: the columns `CTRDataset.batch` reads, labels as float32,
    bag offsets as int32, each shared `row_of` once."""
    cols = {
        "sparse": np.asarray(data.sparse),
        "dense": np.asarray(data.dense),
        "labels": np.asarray(data.labels, np.float32),
    }
    if data.bags:
        row_of = {}
        for b in data.bags:
            if b.row_of is not None and id(b.row_of) not in row_of:
                row_of[id(b.row_of)] = np.asarray(b.row_of, np.int32)
        cols["row_of"] = list(row_of.values())
        cols["bags"] = [
            {
                "starts": np.asarray(b.starts, np.int32),
                "ends": np.asarray(b.ends, np.int32),
                "ids": np.asarray(b.ids, np.int32),
                "values": np.asarray(b.values, np.float32),
            }
            for b in data.bags
        ]
    return cols


def nbytes(data: CTRDataset) -> int:
    """Device bytes a store of `data` takes (without materialising it)."""
    n = data.num_rows
    total = data.sparse.size * 4 + data.dense.size * 4 + data.labels.size * 4
    shared = {id(b.row_of) for b in data.bags if b.row_of is not None}
    total += 4 * n * len(shared)
    for b in data.bags:
        total += 8 * len(b.starts) + 8 * len(b.ids)
    return int(total)


def budget_bytes(device: jax.Device) -> int:
    """What "auto" lets a store take on `device`."""
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    limit = (stats or {}).get("bytes_limit")
    return int(AUTO_FRACTION * limit) if limit else CPU_AUTO_BYTES


def unsupported(data: CTRDataset) -> str:
    """Why `data` cannot be held on the device ("" when it can)."""
    if not _bag_index_dtype(data):
        return "a bag field has more than 2**31 entries"
    if data.num_rows > _INT32_MAX:
        return "more than 2**31 rows"
    return ""


@dataclasses.dataclass(frozen=True)
class _Layout:
    """The static structure `gather` needs: per bag field, which shared row_of it reads
    (-1: per-row bags) and whether it holds any entry."""

    bag_row_of: tuple[int, ...]
    bag_empty: tuple[bool, ...]
    max_bag_len: int


class DeviceStore:
    """`data`'s columns on `device`; `gather(arrays, idx)` is the pure, jittable batch."""

    def __init__(self, data: CTRDataset, device: jax.Device):
        slots, seen = [], {}
        for b in data.bags:
            if b.row_of is None:
                slots.append(-1)
            else:
                slots.append(seen.setdefault(id(b.row_of), len(seen)))
        self.layout = _Layout(
            tuple(slots), tuple(len(b.ids) == 0 for b in data.bags), data.max_bag_len
        )
        # Uncommitted on the default device (the single and lane launchers' device), as the
        # initial state is: committed arrays would commit the state the first call returns,
        # and the second call would compile again for the new argument shardings.
        default = device == jax.devices()[0]
        self.arrays = jax.device_put(columns(data), None if default else device)

    def gather(self, arrays: dict, idx: jax.Array) -> dict:
        return gather(self.layout, arrays, idx)


def _gather_bag(col: dict, k: jax.Array, max_len: int, empty: bool):
    """`BagField.gather` on the device: padded ids, values and mask of bag rows k."""
    start = col["starts"][k]
    length = jnp.minimum(col["ends"][k] - start, max_len)
    mask = jnp.arange(max_len)[None, :] < length[:, None]
    if empty:
        z = jnp.zeros(mask.shape, jnp.int32)
        return z, z.astype(jnp.float32), mask.astype(jnp.float32)
    pos = jnp.where(mask, start[:, None] + jnp.arange(max_len)[None, :], 0)
    ids = jnp.where(mask, col["ids"][pos], 0).astype(jnp.int32)
    values = jnp.where(mask, col["values"][pos], 0.0).astype(jnp.float32)
    return ids, values, mask.astype(jnp.float32)


def gather(layout: _Layout, arrays: dict, idx: jax.Array) -> dict:
    """The batch of rows `idx` [B] of the store's `arrays`, as `CTRDataset.batch(idx)` builds
    it on the host (labels float32 [B, T]; bags [B, Fb, max_bag_len])."""
    batch = {
        "sparse": arrays["sparse"][idx],
        "dense": arrays["dense"][idx],
        "labels": arrays["labels"][idx],
    }
    if layout.bag_row_of:
        parts = []
        for col, slot, empty in zip(
            arrays["bags"], layout.bag_row_of, layout.bag_empty, strict=True
        ):
            k = idx if slot < 0 else arrays["row_of"][slot][idx]
            parts.append(_gather_bag(col, k, layout.max_bag_len, empty))
        batch["bag_ids"] = jnp.stack([p[0] for p in parts], axis=1)
        batch["bag_values"] = jnp.stack([p[1] for p in parts], axis=1)
        batch["bag_mask"] = jnp.stack([p[2] for p in parts], axis=1)
    return batch


class StepIndices:
    """A grain source beside a `StepBatchSource`: item i is step i's row indices instead of
    its batch, {"idx": int32 [B]} (sorted for a memory-mapped dataset, as its batch is)."""

    def __init__(self, source: StepBatchSource):
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    @property
    def steps_per_epoch(self) -> int:
        return self.source.steps_per_epoch

    def __getitem__(self, step: int) -> dict[str, np.ndarray]:
        idx = self.source.indices(step)
        if isinstance(self.source.data.sparse, np.memmap):  # as CTRDataset.batch orders them
            idx = np.sort(idx)
        return {"idx": np.asarray(idx, np.int32)}
