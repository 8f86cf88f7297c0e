"""grain input pipeline: one record per training step, gathered a whole batch at a time.

Per-row pipelines (one Python call per impression) run at tens of thousands of rows/s; a
batch-level gather from column arrays or memmaps runs at millions. So the grain record here is
a whole batch: record i of `StepBatchSource` is step i's batch, cut from epoch i // S's seeded
permutation (S = steps per epoch) and gathered with one fancy index per column. grain supplies
the prefetch threads and a checkpointable iterator (`get_state` / `set_state`), so a resumed run
continues at exactly the next step.

Multi-process: every process computes the same global permutation and keeps its contiguous
slice of each global batch (`process_index`, `process_count`), so the processes together see
every global batch exactly once and no coordination is needed.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import grain
import numpy as np

from autoheri_jax.data.dataset import CTRDataset


class StepBatchSource:
    """Random-access source over training steps: len = epochs x steps_per_epoch batches, or
    `max_steps` when that is smaller (> 0: a fixed step budget on a big file).

    Item i is `data.batch` of this process's batch_size / process_count rows of step i, drawn
    from the epoch's permutation of (seed, epoch); an epoch's last rows short of a whole batch
    are dropped. ValueError when batch_size exceeds the rows or does not divide over the
    processes."""

    def __init__(
        self,
        data: CTRDataset,
        batch_size: int,
        seed: int,
        num_epochs: int,
        process_index: int = 0,
        process_count: int = 1,
        max_steps: int = 0,
    ):
        if batch_size % process_count:
            raise ValueError(
                f"batch_size {batch_size} is not divisible by {process_count} processes"
            )
        if data.num_rows < batch_size:
            raise ValueError(f"batch_size {batch_size} exceeds the {data.num_rows} rows")
        if not 0 <= process_index < process_count:
            raise ValueError(f"process_index {process_index} not in [0, {process_count})")
        self.data, self.batch_size, self.seed, self.num_epochs = data, batch_size, seed, num_epochs
        self.max_steps = max_steps
        self.local_batch = batch_size // process_count
        self.process_index = process_index
        self.steps_per_epoch = data.num_rows // batch_size  # remainder dropped: static shapes
        self._lock = threading.Lock()
        self._perm_epoch, self._perm = -1, np.zeros(0, np.int64)

    def __len__(self) -> int:
        steps = self.num_epochs * self.steps_per_epoch
        return min(steps, self.max_steps) if self.max_steps > 0 else steps

    def permutation(self, epoch: int) -> np.ndarray:
        """[N] the row order of `epoch`, drawn from (seed, epoch) and cached for the epoch."""
        with self._lock:  # prefetch threads share one cached permutation per epoch
            if self._perm_epoch != epoch:
                rng = np.random.default_rng([self.seed, epoch])
                dtype = np.int32 if self.data.num_rows < 2**31 else np.int64
                self._perm = rng.permutation(self.data.num_rows).astype(dtype)
                self._perm_epoch = epoch
            return self._perm

    def indices(self, step: int) -> np.ndarray:
        """This process's row indices [batch_size / process_count] of global step `step`."""
        if not 0 <= step < len(self):
            raise IndexError(f"step {step} outside [0, {len(self)})")
        epoch, b = divmod(step, self.steps_per_epoch)
        start = b * self.batch_size + self.process_index * self.local_batch
        return self.permutation(epoch)[start : start + self.local_batch]

    def __getitem__(self, step: int) -> dict[str, np.ndarray]:
        return self.data.batch(self.indices(step))


def train_iterator(
    source: StepBatchSource, num_threads: int = 2, prefetch: int = 4
) -> Iterator[dict[str, np.ndarray]]:
    """A checkpointable grain iterator over `source`, `prefetch` batches ahead of the step."""
    ds = grain.MapDataset.source(source)
    options = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch)
    return iter(ds.to_iter_dataset(options))
