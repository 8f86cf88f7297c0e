"""train.bag_slots: the step gathers, pools and scatters only a batch's real bag entries, and
agrees with the padded path up to float rounding (forward, gradients, updates)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from autoheri_jax.config import TrainConfig
from autoheri_jax.model.embedding import embed
from autoheri_jax.model.network import init_params
from autoheri_jax.train import sparse_embedding as se
from autoheri_jax.train.optim import make_optimizer
from autoheri_jax.train.step import init_state, make_grad_fn, make_update_fn
from tests.helpers import VOCABS, tiny_batch, tiny_spec

BAGS = (9, 13, 6)  # three bag fields
L = 6


def _spec(**kw):
    base = tiny_spec(edge_mode="hierarchical", searched=False, **kw)
    return dataclasses.replace(base, bag_vocab_sizes=BAGS)


def _batch(b=24, seed=0, lengths=None):
    """Bags of every length 0..L (empty ones included), ids repeating across rows."""
    rng = np.random.default_rng(seed)
    batch = tiny_batch(b, seed=seed)
    if lengths is None:
        lengths = rng.integers(0, L + 1, (b, len(BAGS)))
        lengths[0] = 0  # a row whose bags are all empty
        lengths[1] = L  # and one whose bags are all full
    mask = (np.arange(L) < lengths[..., None]).astype(np.float32)
    ids = np.stack([rng.integers(0, v, (b, L)) for v in BAGS], axis=1).astype(np.int32)
    batch["bag_ids"] = np.where(mask > 0, ids, 0).astype(np.int32)
    batch["bag_values"] = (mask * rng.uniform(0.5, 2.0, mask.shape)).astype(np.float32)
    batch["bag_mask"] = mask
    return batch


def _grads(spec, cfg, batch):
    params = init_params(jax.random.key(1), spec)
    grad_fn = make_grad_fn(spec, cfg)

    def fn(*args):  # SparseRows is no pytree: return its arrays
        aux, grads, scratch = grad_fn(*args)
        g = grads["embedding"]["table"]
        return aux, {**grads, "embedding": (g.ids, g.values)}, scratch

    scratch = se.new_scratch(spec.table_rows)
    args = (params, batch, jax.random.key(2), jnp.int32(0), scratch)
    aux, grads, scratch = jax.jit(fn)(*args)
    ids, values = (np.asarray(x) for x in grads["embedding"])
    dense = np.zeros((spec.table_rows, spec.model.embed_dim), np.float32)
    np.add.at(dense, ids[ids < spec.table_rows], values[ids < spec.table_rows])
    others = {k: v for k, v in grads.items() if k != "embedding"}
    assert np.all(np.asarray(scratch) == se.SCRATCH_EMPTY)  # the scratch is handed back clean
    return aux, dense, others


@pytest.mark.parametrize("pooling,weighted", [("mean", False), ("sum", True)])
def test_compact_bags_equal_the_padded_path(pooling, weighted):
    spec = _spec(bag_pooling=pooling, bag_value_weighted=weighted)
    batch = _batch()
    assert se.bag_slots(batch, 0.75) < batch["bag_mask"].size  # compact path really taken
    assert bool(se.bags_fit(batch, se.bag_slots(batch, 0.75)))
    padded = _grads(spec, TrainConfig(), batch)
    compact = _grads(spec, TrainConfig(bag_slots=0.75), batch)
    for k in padded[0]:
        np.testing.assert_allclose(compact[0][k], padded[0][k], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(compact[1], padded[1], rtol=1e-5, atol=1e-6)
    assert np.abs(padded[1][sum(VOCABS) :]).sum() > 0  # the bag rows did get gradients
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), compact[2], padded[2]
    )


def test_compact_forward_equals_the_padded_forward():
    spec = _spec()
    batch = _batch(seed=3)
    params = init_params(jax.random.key(0), spec)
    table = params["embedding"]["table"]
    slots = se.bag_slots(batch, 0.75)
    rows, single, bags, _, _ = se.unique_lookup_rows(spec, batch, se.new_scratch(len(table)), slots)
    assert isinstance(bags, se.CompactBags)
    from autoheri_jax.model.embedding import embed_from

    got = embed_from(se.gather_rows(table, rows), spec, batch, single, bags)
    np.testing.assert_allclose(got, embed(params, spec, batch), rtol=1e-6, atol=1e-7)


def test_touched_rows_are_the_same():
    spec = _spec()
    batch = _batch(seed=5)
    scratch = se.new_scratch(spec.table_rows)
    r0, *_, n0, scratch = se.unique_lookup_rows(spec, batch, scratch, 0)
    r1, *_, n1, _ = se.unique_lookup_rows(spec, batch, scratch, se.bag_slots(batch, 0.75))
    assert int(n0) == int(n1)
    np.testing.assert_array_equal(np.sort(r0[: int(n0)]), np.sort(r1[: int(n1)]))


@pytest.mark.parametrize("case", ["overflow", "not_a_prefix"])
def test_a_batch_that_does_not_fit_takes_the_padded_path(case):
    spec = _spec()
    if case == "overflow":  # every bag full: more real entries than slots
        batch = _batch(lengths=np.full((24, len(BAGS)), L))
    else:  # a hole in one bag: compaction by prefix would misplace it
        batch = _batch(seed=7)
        batch["bag_mask"][2, 0] = np.array([1, 0, 1, 0, 0, 0], np.float32)
    slots = se.bag_slots(batch, 0.75)
    assert not bool(se.bags_fit(batch, slots))
    padded = _grads(spec, TrainConfig(), batch)
    compact = _grads(spec, TrainConfig(bag_slots=0.75), batch)
    np.testing.assert_allclose(compact[1], padded[1], rtol=1e-6, atol=1e-7)


def test_steps_with_bag_slots_follow_the_padded_steps():
    spec = _spec()
    batches = [_batch(seed=s) for s in range(3)]

    def run(cfg):
        opt = make_optimizer(cfg)
        state = init_state(spec, cfg, opt)
        update = make_update_fn(spec, cfg, opt)
        for b in batches:
            state, _ = update(state, b)
        return state.params

    a, b = run(TrainConfig(lr=1e-2)), run(TrainConfig(lr=1e-2, bag_slots=0.75))
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6), a, b)


def test_vmapped_lanes_with_bag_slots_follow_the_padded_path():
    """Seed lanes vmap the step over their own batches: the branch becomes a select per lane
    (both computed), and each lane still gets its own path's result."""
    spec = _spec()
    full = _batch(lengths=np.full((24, len(BAGS)), L))  # does not fit: padded in that lane
    batches = jax.tree.map(lambda *x: np.stack(x), _batch(seed=1), full)
    params = init_params(jax.random.key(1), spec)

    def per_lane(cfg):
        grad_fn = make_grad_fn(spec, cfg)

        def one(batch, scratch):
            aux, grads, scratch = grad_fn(params, batch, jax.random.key(2), jnp.int32(0), scratch)
            g = grads["embedding"]["table"]
            return aux["loss"], g.ids, g.values, scratch

        scratch = jnp.stack([se.new_scratch(spec.table_rows)] * 2)
        return jax.jit(jax.vmap(one))(batches, scratch)

    padded, compact = per_lane(TrainConfig()), per_lane(TrainConfig(bag_slots=0.75))
    np.testing.assert_allclose(compact[0], padded[0], rtol=1e-6)
    np.testing.assert_array_equal(compact[1], padded[1])
    np.testing.assert_allclose(compact[2], padded[2], rtol=1e-5, atol=1e-6)
    assert np.all(np.asarray(compact[3]) == se.SCRATCH_EMPTY)


@pytest.mark.parametrize("slots", [0.0, 0.75])
def test_direct_bag_rows_keep_dedupes_contract(slots, monkeypatch):
    """Bag fields with vocabulary <= B x L are numbered by a touched mask, not deduplicated:
    the same distinct rows, each entry pointing at its own row, and the same gradients."""
    spec = _spec()
    batch = _batch(seed=11)
    assert se._direct_bags(spec, 24, L)
    scratch = se.new_scratch(spec.table_rows)
    s = se.bag_slots(batch, slots)
    direct = se.unique_lookup_rows(spec, batch, scratch, s)
    monkeypatch.setattr(se, "_direct_bags", lambda *a: False)
    deduped = se.unique_lookup_rows(spec, batch, scratch, s)
    for rows, single, _, n, out in (direct, deduped):
        n = int(n)
        assert len(set(np.asarray(rows[:n]).tolist())) == n
        assert np.all(np.asarray(rows[n:]) == spec.table_rows)
        assert np.all(np.asarray(out) == se.SCRATCH_EMPTY)
        np.testing.assert_array_equal(
            np.asarray(rows)[np.asarray(single)], np.asarray(se.lookup_rows(spec, batch)[0])
        )
    assert int(direct[3]) == int(deduped[3])
    np.testing.assert_array_equal(np.sort(direct[0]), np.sort(deduped[0]))
    idx = lambda b: b.index if isinstance(b, se.CompactBags) else b
    np.testing.assert_array_equal(
        np.asarray(direct[0])[np.asarray(idx(direct[2]))],
        np.asarray(deduped[0])[np.asarray(idx(deduped[2]))],
    )
    cfg = TrainConfig(bag_slots=slots)
    want = _grads(spec, cfg, batch)
    monkeypatch.undo()
    got = _grads(spec, cfg, batch)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-6, atol=1e-7)
