import dataclasses

import numpy as np
import pytest

from autoheri_jax.data.dataset import BagField, CTRDataset, eval_batch_indices
from autoheri_jax.data.pipeline import StepBatchSource, train_iterator
from autoheri_jax.data.store import (
    SideTableWriter,
    SplitWriter,
    StoreError,
    open_split,
    read_manifest,
    write_manifest,
)
from tests.helpers import toy_dataset


def test_each_epoch_visits_every_kept_row_once():
    data = toy_dataset(1000)
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
    data = toy_dataset(1000)
    whole = StepBatchSource(data, 64, seed=1, num_epochs=1)
    parts = [
        StepBatchSource(data, 64, seed=1, num_epochs=1, process_index=p, process_count=4)
        for p in range(4)
    ]
    for step in (0, 7):
        joined = np.concatenate([p.indices(step) for p in parts])
        np.testing.assert_array_equal(joined, whole.indices(step))
    with pytest.raises(ValueError, match="divisible"):
        StepBatchSource(data, 63, seed=1, num_epochs=1, process_count=2)


def test_iterator_state_resumes_at_the_next_batch():
    src = StepBatchSource(toy_dataset(1000), 32, seed=0, num_epochs=1)
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
    data = toy_dataset(50)
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
    data = toy_dataset(300)
    bag = data.bags[0]
    w = SplitWriter(tmp_path / "train", 2, 2, 2, ["150_14"])
    for a in range(0, 300, 128):  # streamed in chunks
        b = min(a + 128, 300)
        lengths = bag.ends[a:b] - bag.starts[a:b]
        sl = slice(bag.starts[a], bag.ends[b - 1])
        w.append(
            data.labels[a:b].astype(np.int8),
            data.sparse[a:b],
            data.dense[a:b],
            {"150_14": (lengths, bag.ids[sl], bag.values[sl])},
        )
    split = w.close()
    write_manifest(
        tmp_path,
        {
            "stage_names": ["click", "conversion"],
            "fields": ["row", "f"],
            "bag_fields": ["150_14"],
            "dense_fields": ["a", "b"],
            "vocab_sizes": {"row": 300, "f": 9, "150_14": 50},
            "splits": {"train": split},
        },
    )
    stored = open_split(tmp_path, "train")
    stored = CTRDataset(**{**stored.__dict__, "max_bag_len": 4})
    assert isinstance(stored.sparse, np.memmap) and stored.num_rows == 300
    idx = np.sort(np.random.default_rng(0).choice(300, 64, replace=False))
    a, b = stored.batch(idx), data.batch(idx)
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])


def _shared(n=200, users=13, seed=1):
    """A dataset whose one bag field is shared through row_of, and the same bags expanded."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, 7, users)
    lengths[3] = 0  # an empty user bag
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    ids = rng.integers(1, 40, offsets[-1]).astype(np.int32)
    values = rng.random(offsets[-1]).astype(np.float32)
    row_of = rng.integers(0, users, n).astype(np.int32)
    shared = BagField("150_14", 40, offsets[:-1], offsets[1:], ids, values, row_of=row_of)
    ex_len = lengths[row_of]
    ex_off = np.concatenate([[0], np.cumsum(ex_len)])
    pos = np.concatenate([np.arange(offsets[u], offsets[u + 1]) for u in row_of])
    expanded = BagField("150_14", 40, ex_off[:-1], ex_off[1:], ids[pos], values[pos])
    base = toy_dataset(n, with_bags=False)
    make = lambda bag: CTRDataset(**{**base.__dict__, "bags": (bag,), "max_bag_len": 4})
    return make(shared), make(expanded)


def test_shared_bags_gather_the_mapped_rows():
    shared, expanded = _shared()
    idx = np.random.default_rng(0).permutation(200)[:64]
    a, b = shared.batch(idx), expanded.batch(idx)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert a["bag_mask"].sum() > 0 and (a["bag_mask"].sum(-1) == 0).any()  # some empty bags
    bag = shared.bags[0]
    assert bag.num_rows == 200 and len(bag.starts) == 13
    for r in range(200):
        for x, y in zip(bag.row(r), expanded.bags[0].row(r), strict=True):
            np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize(
    "idx", [slice(30, 90), slice(None, None, 3), np.array([5, 5, 199, 0, 17]), np.arange(0)]
)
def test_shared_bags_take(idx):
    shared, expanded = _shared()
    a, b = shared.take(idx), expanded.take(idx)
    assert a.num_rows == b.num_rows
    bag = a.bags[0]
    assert bag.starts is shared.bags[0].starts and bag.ids is shared.bags[0].ids  # CSR untouched
    np.testing.assert_array_equal(bag.row_of, shared.bags[0].row_of[idx])
    rows = np.arange(a.num_rows)
    for key, val in a.batch(rows).items():
        np.testing.assert_array_equal(val, b.batch(rows)[key])
    c, d = a.split([a.num_rows // 2])[0], b.split([b.num_rows // 2])[0]  # a take of a take
    rows = np.arange(c.num_rows)
    np.testing.assert_array_equal(c.batch(rows)["bag_ids"], d.batch(rows)["bag_ids"])


def test_shared_bags_are_validated():
    shared, _ = _shared()
    bag, n = shared.bags[0], shared.num_rows
    make = lambda b: CTRDataset(**{**shared.__dict__, "bags": (b,)})
    for bad, match in (
        (dataclasses.replace(bag, row_of=bag.row_of[:-1]), "row_of must be integer"),
        (dataclasses.replace(bag, row_of=bag.row_of.astype(np.float32)), "row_of must be"),
        (dataclasses.replace(bag, row_of=np.full(n, 13, np.int32)), "outside the 13 bag rows"),
        (dataclasses.replace(bag, row_of=np.full(n, -1, np.int64)), "outside"),
        (dataclasses.replace(bag, ends=bag.ends[:-1]), "equal-length"),
        (dataclasses.replace(bag, row_of=None), r"starts/ends must be \[200\]"),
    ):
        with pytest.raises(ValueError, match=match):
            make(bad)


def test_ids_outside_a_fields_vocabulary_are_refused():
    data = toy_dataset(50)
    sparse = data.sparse.copy()
    sparse[7, 0] = data.vocab_sizes[0]
    with pytest.raises(ValueError, match=r"row 7: field row id 50 is outside its vocabulary"):
        CTRDataset(**{**data.__dict__, "sparse": sparse})
    sparse[7, 0] = -1
    with pytest.raises(ValueError, match="row 7"):
        CTRDataset(**{**data.__dict__, "sparse": sparse})
    bag = data.bags[0]
    ids = bag.ids.copy()
    ids[3] = bag.vocab_size + 2
    with pytest.raises(ValueError, match=r"bag field 150_14: ids span .* outside its vocab"):
        CTRDataset(**{**data.__dict__, "bags": (dataclasses.replace(bag, ids=ids),)})


def _write_shared_store(root, data, chunk=64):
    """data's shared bag through a side table (users written as they are first needed, so the
    two streams interleave), the per-row copy of it as a second, per-row field."""
    shared, expanded = data
    bag, ex = shared.bags[0], expanded.bags[0]
    side = SideTableWriter(root / "side.users", ["150_14"])
    w = SplitWriter(root / "train", 2, 2, 2, ["150_14", "copy"], shared={"150_14": side})
    written = 0
    for a in range(0, shared.num_rows, chunk):
        b = min(a + chunk, shared.num_rows)
        need = int(bag.row_of[a:b].max()) + 1
        if need > written:  # side rows [written, need)
            sl = slice(bag.starts[written], bag.ends[need - 1])
            side.append(
                {
                    "150_14": (
                        bag.ends[written:need] - bag.starts[written:need],
                        bag.ids[sl],
                        bag.values[sl],
                    )
                }
            )
            written = need
        sl = slice(ex.starts[a], ex.ends[b - 1])
        w.append(
            shared.labels[a:b].astype(np.int8),
            shared.sparse[a:b],
            shared.dense[a:b],
            {
                "150_14": bag.row_of[a:b],
                "copy": (ex.ends[a:b] - ex.starts[a:b], ex.ids[sl], ex.values[sl]),
            },
        )
    assert w.bag_tables == {"150_14": "side.users"}
    write_manifest(
        root,
        {
            "stage_names": ["click", "conversion"],
            "fields": ["row", "f"],
            "bag_fields": ["150_14", "copy"],
            "dense_fields": ["a", "b"],
            "vocab_sizes": {"row": shared.num_rows, "f": 9, "150_14": 40, "copy": 40},
            "splits": {"train": w.close()},
            "side_tables": {"side.users": side.close()},
            "bag_tables": {"train": w.bag_tables},
        },
    )


def test_store_round_trip_with_a_side_table(tmp_path):
    data = _shared(300, users=13)
    _write_shared_store(tmp_path, data)
    shared = data[0].bags[0]
    side_ids = np.load(tmp_path / "side.users" / "bag.150_14.ids.npy")
    assert len(side_ids) == int((shared.ends - shared.starts).sum())  # once per user
    assert len(side_ids) < len(data[1].bags[0].ids)  # not once per impression
    assert not (tmp_path / "train" / "bag.150_14.ids.npy").exists()
    assert (tmp_path / "train" / "side.users.row.npy").is_file()
    stored = open_split(tmp_path, "train")
    stored = CTRDataset(**{**stored.__dict__, "max_bag_len": 4})
    bag, copy = stored.bags
    assert isinstance(bag.row_of, np.memmap) and bag.row_of.dtype == np.int32
    assert copy.row_of is None and len(bag.starts) == 13
    r1 = int(np.flatnonzero(bag.row_of == bag.row_of[0])[1])  # two impressions, one user
    assert bag.row_of[0] == bag.row_of[r1]
    for r in (0, r1):
        np.testing.assert_array_equal(bag.row(r)[0], copy.row(r)[0])
    idx = np.sort(np.random.default_rng(0).choice(300, 64, replace=False))
    got = stored.batch(idx)
    want = data[1].batch(idx)
    np.testing.assert_array_equal(got["bag_ids"][:, 0], want["bag_ids"][:, 0])
    np.testing.assert_array_equal(got["bag_ids"][:, 1], want["bag_ids"][:, 0])
    np.testing.assert_array_equal(got["bag_values"][:, 0], got["bag_values"][:, 1])
    np.testing.assert_array_equal(got["bag_mask"][:, 0], got["bag_mask"][:, 1])
    half = stored.take(np.arange(150, 300))  # a memmapped split, carved
    np.testing.assert_array_equal(
        half.batch(np.arange(150))["bag_ids"], stored.batch(np.arange(150, 300))["bag_ids"]
    )
    src = StepBatchSource(stored, batch_size=32, seed=0, num_epochs=1)
    batch = next(train_iterator(src))
    assert batch["bag_ids"].shape == (32, 2, 4)
    np.testing.assert_array_equal(batch["bag_ids"][:, 0], batch["bag_ids"][:, 1])


def test_side_table_writer_guards(tmp_path):
    side = SideTableWriter(tmp_path / "side.u", ["150_14", "109_14"])
    one = (np.array([2, 0]), np.array([4, 5]), np.ones(2, np.float32))
    side.append({"150_14": one, "109_14": (np.array([0, 1]), np.array([7]), np.ones(1))})
    shared = dict.fromkeys(["150_14", "109_14"], side)
    w = SplitWriter(tmp_path / "train", 2, 0, 0, ["150_14", "109_14"], shared=shared)
    no = (np.zeros((2, 2), np.int8), np.zeros((2, 0), np.int32), np.zeros((2, 0), np.float32))
    with pytest.raises(StoreError, match="outside the 2 rows"):
        w.append(*no, dict.fromkeys(shared, np.array([0, 2])))  # side row 2 is not written yet
    with pytest.raises(StoreError, match="rows must be integer"):
        w.append(*no, dict.fromkeys(shared, np.array([0.0, 1.0])))
    with pytest.raises(StoreError, match="rows differ"):
        w.append(*no, {"150_14": np.array([1, 0]), "109_14": np.array([0, 1])})
    with pytest.raises(StoreError, match="lengths / ids / values"):
        side.append({"150_14": (np.array([3, 0]), np.array([4, 5]), np.ones(2)), "109_14": one})
    with pytest.raises(StoreError, match="different row counts"):
        side.append({"150_14": one, "109_14": (np.array([1]), np.array([4]), np.ones(1))})
    with pytest.raises(StoreError, match="side table directory"):
        SideTableWriter(tmp_path / "users", ["150_14"])
    with pytest.raises(StoreError, match="not in the store"):
        SplitWriter(tmp_path / "x" / "train", 2, 0, 0, ["150_14"], shared={"150_14": side})
    w.append(*no, {"150_14": np.array([1, 0]), "109_14": np.array([1, 0])})
    assert w.rows == 2 and side.rows == 2  # a refused chunk wrote nothing
    assert sorted(p.name for p in (tmp_path / "train").iterdir()) == [
        "dense.npy",
        "labels.npy",
        "side.u.row.npy",
        "sparse.npy",
    ]
    write_manifest(
        tmp_path,
        {
            "stage_names": ["click", "conversion"],
            "fields": [],
            "bag_fields": ["150_14", "109_14"],
            "dense_fields": [],
            "vocab_sizes": {"150_14": 9, "109_14": 9},
            "splits": {"train": w.close()},
            "side_tables": {"side.u": side.close()},
            "bag_tables": {"train": {"150_14": "../x", "109_14": "side.u"}},
        },
    )
    with pytest.raises(StoreError, match="not a listed side table"):
        open_split(tmp_path, "train")
    m = read_manifest(tmp_path)
    m["bag_tables"]["train"]["150_14"] = "side.u"
    ds = open_split(tmp_path, "train", m)
    assert [ds.bags[0].row(r)[0].tolist() for r in (0, 1)] == [[], [4, 5]]
    assert [ds.bags[1].row(r)[0].tolist() for r in (0, 1)] == [[7], []]
