import numpy as np
import pytest

from autoheri_jax.data.dataset import BagField, CTRDataset, eval_batch_indices
from autoheri_jax.data.pipeline import StepBatchSource, train_iterator
from autoheri_jax.data.store import SplitWriter, open_split, write_manifest


def _dataset(n=1000, with_bags=True):
    rng = np.random.default_rng(0)
    lengths = rng.integers(0, 6, n)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    bags = (
        BagField("150_14", 50, offsets[:-1], offsets[1:],
                 rng.integers(1, 50, offsets[-1]).astype(np.int32),
                 rng.random(offsets[-1]).astype(np.float32)),
    )  # fmt: skip
    click = rng.random(n) < 0.3
    return CTRDataset(
        sparse=np.stack([np.arange(n), rng.integers(0, 9, n)], 1).astype(np.int32),
        dense=rng.random((n, 2), dtype=np.float32),
        labels=np.stack([click, click & (rng.random(n) < 0.3)], 1).astype(np.float32),
        field_names=("row", "f"),
        vocab_sizes=(n, 9),
        stage_names=("click", "conversion"),
        bags=bags if with_bags else (),
        max_bag_len=4,
    )


def test_each_epoch_visits_every_kept_row_once():
    data = _dataset(1000)
    src = StepBatchSource(data, batch_size=64, seed=3, num_epochs=2)
    assert len(src) == 2 * (1000 // 64)
    for epoch in range(2):
        rows = np.concatenate([src[s]["sparse"][:, 0] for s in range(epoch * 15, (epoch + 1) * 15)])
        assert len(np.unique(rows)) == 15 * 64  # no repeats; the 40-row remainder is dropped
    first = np.sort(np.concatenate([src.indices(s) for s in range(15)]))
    second = np.sort(np.concatenate([src.indices(s) for s in range(15, 30)]))
    assert not np.array_equal(first, second)  # a fresh permutation per epoch
    again = StepBatchSource(data, batch_size=64, seed=3, num_epochs=2)
    np.testing.assert_array_equal(src.indices(17), again.indices(17))


def test_processes_split_each_global_batch():
    data = _dataset(1000)
    whole = StepBatchSource(data, 64, seed=1, num_epochs=1)
    parts = [StepBatchSource(data, 64, seed=1, num_epochs=1, process_index=p, process_count=4)
             for p in range(4)]  # fmt: skip
    for step in (0, 7):
        joined = np.concatenate([p.indices(step) for p in parts])
        np.testing.assert_array_equal(joined, whole.indices(step))
    with pytest.raises(ValueError, match="divisible"):
        StepBatchSource(data, 63, seed=1, num_epochs=1, process_count=2)


def test_iterator_state_resumes_at_the_next_batch():
    src = StepBatchSource(_dataset(1000), 32, seed=0, num_epochs=1)
    it = train_iterator(src)
    for _ in range(5):
        next(it)
    state = it.get_state()
    expected = [next(it) for _ in range(3)]
    resumed = train_iterator(src)
    resumed.set_state(state)
    for want in expected:
        got = next(resumed)
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])


def test_bag_gather_pads_truncates_and_masks():
    data = _dataset(50)
    bag = data.bags[0]
    idx = np.arange(50)
    batch = data.batch(idx)
    assert batch["bag_ids"].shape == (50, 1, 4)
    for r in range(50):
        full = bag.ids[bag.starts[r] : bag.ends[r]]
        n = min(len(full), 4)
        np.testing.assert_array_equal(batch["bag_ids"][r, 0, :n], full[:n])
        np.testing.assert_array_equal(batch["bag_mask"][r, 0], np.arange(4) < n)
        assert np.all(batch["bag_ids"][r, 0, n:] == 0) and np.all(
            batch["bag_values"][r, 0, n:] == 0
        )


def test_eval_pass_is_exact():
    seen = []
    for idx, valid in eval_batch_indices(10, 4):
        assert len(idx) == 4
        seen.extend(idx[:valid])
    assert seen == list(range(10))


def test_memmapped_store_batches_equal_in_memory(tmp_path):
    data = _dataset(300)
    bag = data.bags[0]
    w = SplitWriter(tmp_path / "train", 2, 2, 2, ["150_14"])
    for a in range(0, 300, 128):  # streamed in chunks
        b = min(a + 128, 300)
        lengths = bag.ends[a:b] - bag.starts[a:b]
        sl = slice(bag.starts[a], bag.ends[b - 1])
        w.append(data.labels[a:b].astype(np.int8), data.sparse[a:b], data.dense[a:b],
                 {"150_14": (lengths, bag.ids[sl], bag.values[sl])})  # fmt: skip
    split = w.close()
    write_manifest(tmp_path, {
        "stage_names": ["click", "conversion"], "fields": ["row", "f"], "bag_fields": ["150_14"],
        "dense_fields": ["a", "b"], "vocab_sizes": {"row": 300, "f": 9, "150_14": 50},
        "splits": {"train": split},
    })  # fmt: skip
    stored = open_split(tmp_path, "train")
    stored = CTRDataset(**{**stored.__dict__, "max_bag_len": 4})
    assert isinstance(stored.sparse, np.memmap) and stored.num_rows == 300
    idx = np.sort(np.random.default_rng(0).choice(300, 64, replace=False))
    a, b = stored.batch(idx), data.batch(idx)
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
