"""Per-field vocabularies: raw ids -> compact ids, built on the training split only.

A field's vocabulary is the sorted array of raw ids seen at least `min_count` times in training.
Raw id `vocab[k]` maps to k + 1; every other id (rare, or first seen in test) maps to 0, the
shared "unknown" row. Applying a vocabulary is one `searchsorted`, so it runs at column speed.
Counting streams: chunks are reduced to (unique ids, counts) and merged as they arrive.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

_COMPACT_EVERY = 64  # pending chunks merged at a time: bounds memory while streaming
_LUT_MAX = 1 << 24  # largest raw id mapped through a dense lookup table (64 MB of int32)


class FieldCounter:
    """Streaming occurrence counts of one field's raw ids."""

    def __init__(self) -> None:
        self._pending: list[tuple[np.ndarray, np.ndarray]] = []
        self._ids = np.zeros(0, np.int64)
        self._counts = np.zeros(0, np.int64)

    def update(self, raw_ids: np.ndarray, weights: np.ndarray | None = None) -> None:
        """Counts raw_ids (each occurrence counts `weights[i]` times, default once)."""
        raw_ids = np.asarray(raw_ids, np.int64).ravel()
        if weights is None:
            ids, counts = np.unique(raw_ids, return_counts=True)
        else:
            ids, inverse = np.unique(raw_ids, return_inverse=True)
            counts = np.bincount(
                inverse, weights=np.asarray(weights, np.float64), minlength=len(ids)
            )
        self._pending.append((ids, counts.astype(np.int64)))
        if len(self._pending) >= _COMPACT_EVERY:
            self._compact()

    def _compact(self) -> None:
        if not self._pending:
            return
        ids = np.concatenate([self._ids, *(p[0] for p in self._pending)])
        counts = np.concatenate([self._counts, *(p[1] for p in self._pending)])
        self._pending = []
        self._ids, inverse = np.unique(ids, return_inverse=True)
        self._counts = np.bincount(inverse, weights=counts, minlength=len(self._ids)).astype(
            np.int64
        )

    def counts(self) -> tuple[np.ndarray, np.ndarray]:
        """(sorted distinct raw ids int64 [V], their counts int64 [V]) so far."""
        self._compact()
        return self._ids, self._counts

    def vocabulary(self, min_count: int) -> np.ndarray:
        """Sorted raw ids seen at least min_count times."""
        ids, counts = self.counts()
        return ids[counts >= min_count]


def build_vocabulary(columns: Iterable[np.ndarray], min_count: int) -> np.ndarray:
    """Sorted int64 raw ids seen at least min_count times over all of `columns`."""
    counter = FieldCounter()
    for col in columns:
        counter.update(col)
    return counter.vocabulary(min_count)


def apply_vocabulary(vocab: np.ndarray, raw_ids: np.ndarray) -> np.ndarray:
    """int32 compact ids: position + 1 for ids in vocab, 0 otherwise. Shape of raw_ids."""
    raw = np.asarray(raw_ids, np.int64)
    if len(vocab) == 0:
        return np.zeros(raw.shape, np.int32)
    top = int(vocab[-1])
    if vocab[0] >= 0 and top < _LUT_MAX and top < 4 * raw.size:  # a table beats a binary search
        lut = np.zeros(top + 2, np.int32)  # lut[-1] == lut[top + 1] == 0: ids outside the vocab
        lut[vocab] = np.arange(1, len(vocab) + 1, dtype=np.int32)
        return lut[np.clip(raw, -1, top + 1)]
    pos = np.searchsorted(vocab, raw)
    pos_c = np.minimum(pos, len(vocab) - 1)
    found = vocab[pos_c] == raw
    return np.where(found, pos_c + 1, 0).astype(np.int32)


def save_vocabularies(root: Path, vocabs: dict[str, np.ndarray]) -> None:
    """Writes each field's sorted raw ids as root/vocab/<field>.npy (int64)."""
    (root / "vocab").mkdir(parents=True, exist_ok=True)
    for field, vocab in vocabs.items():
        np.save(root / "vocab" / f"{field}.npy", np.asarray(vocab, np.int64))


def load_vocabularies(root: Path, fields: Iterable[str]) -> dict[str, np.ndarray]:
    """field -> its sorted raw ids, as `save_vocabularies` wrote them under `root`."""
    return {f: np.load(root / "vocab" / f"{f}.npy") for f in fields}
