import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from autoheri_jax.model.embedding import lookup_rows
from autoheri_jax.train.optim import make_optimizer
from autoheri_jax.train.sparse_embedding import (
    SCRATCH_EMPTY,
    dedupe,
    new_scratch,
    unique_lookup_rows,
    unique_row_bound,
)
from autoheri_jax.train.step import init_state, make_update_fn
from tests.helpers import VOCABS, gated, tiny_batch, tiny_spec

BASE = gated(
    arch_warmup_steps=0, epochs=1, batch_size=16, lr=1e-2, arch_lr=1e-2, entropy_weight=0.0
)


def _run(cfg, spec, batches):
    opt = make_optimizer(cfg)
    state = init_state(spec, cfg, opt)
    update = make_update_fn(spec, cfg, opt)
    for b in batches:
        state, _ = update(state, b)
    return jax.device_get(state.params), update


def _unique(spec, batch):
    rows, single_idx, bag_idx, n, scratch = unique_lookup_rows(
        spec, batch, new_scratch(spec.table_rows)
    )
    assert np.all(np.asarray(scratch) == SCRATCH_EMPTY)  # handed back as it came
    return rows, single_idx, bag_idx, n


def test_unique_rows_are_exact_and_padded_with_the_sentinel():
    spec = tiny_spec(edge_mode="none", searched=False)
    batch = tiny_batch(16)
    rows, single_idx, bag_idx, n = _unique(spec, batch)
    flat = np.asarray(lookup_rows(spec, batch)[0]).ravel()
    want = list(dict.fromkeys(flat.tolist()))  # distinct, in order of first occurrence
    assert rows.shape == (unique_row_bound(spec, 16) + 1,) and bag_idx is None
    assert int(n) == len(want)
    np.testing.assert_array_equal(rows[: len(want)], want)
    assert np.all(np.asarray(rows[len(want) :]) == spec.table_rows)  # out-of-range sentinel
    np.testing.assert_array_equal(np.asarray(rows)[np.asarray(single_idx)], flat.reshape(16, -1))


def test_row_bound_is_per_field_and_tight():
    spec = tiny_spec(edge_mode="none", searched=False)
    big = 10 * max(VOCABS)
    assert unique_row_bound(spec, 1) == len(VOCABS)
    assert unique_row_bound(spec, big) == sum(VOCABS)  # every row of every field
    rng = np.random.default_rng(0)
    batch = tiny_batch(big)
    batch["sparse"] = np.stack([rng.permutation(big) % v for v in VOCABS], axis=1).astype(np.int32)
    _, _, _, n = _unique(spec, batch)
    assert int(n) == unique_row_bound(spec, big)  # reached exactly: no slot to spare


@pytest.mark.parametrize("seed", range(4))
def test_dedupe_finds_distinct_ids_in_first_occurrence_order(seed):
    rng = np.random.default_rng(seed)
    vocab = 60
    x = rng.integers(0, 50 if seed else 1, 300).astype(np.int32)  # seed 0: all equal
    x[rng.integers(0, 300, 7)] = vocab  # some sentinel (masked) entries
    bound = 50
    rows, inv, n, scratch = jax.jit(dedupe, static_argnums=2)(
        jnp.asarray(x), new_scratch(vocab), bound
    )
    want = [v for v in dict.fromkeys(x.tolist()) if v != vocab]
    assert int(n) == len(want) and rows.shape == (bound + 1,) and inv.dtype == jnp.int32
    np.testing.assert_array_equal(rows[: len(want)], want)
    assert np.all(np.asarray(rows[len(want) :]) == vocab)  # padding, then the sentinel slot
    np.testing.assert_array_equal(np.asarray(rows)[np.asarray(inv)], x)
    assert np.all(np.asarray(inv)[x == vocab] == bound)
    assert np.all(np.asarray(scratch) == SCRATCH_EMPTY)


def test_out_of_range_ids_read_their_own_fields_rows():
    spec = tiny_spec(edge_mode="none", searched=False)
    batch = tiny_batch(4)
    batch["sparse"] = batch["sparse"].copy()
    batch["sparse"][0, 0] = VOCABS[0] + 5  # would be field 1's rows without the clamp
    batch["sparse"][1, 0] = -3
    single, _ = lookup_rows(spec, batch)
    assert int(single[0, 0]) == VOCABS[0] - 1 and int(single[1, 0]) == 0


def test_rowwise_adagrad_equals_dense_adagrad():
    spec = tiny_spec(edge_mode="hierarchical")
    batches = [tiny_batch(16, seed=s) for s in range(5)]
    cfg = dataclasses.replace(BASE, embedding_optimizer="adagrad")
    sparse, _ = _run(cfg, spec, batches)
    dense, _ = _run(dataclasses.replace(cfg, sparse_embeddings=False), spec, batches)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-6, atol=1e-7), sparse, dense)


@pytest.mark.slow
def test_lazy_adam_touches_only_looked_up_rows():
    spec = tiny_spec(edge_mode="parallel")
    batches = [tiny_batch(4, seed=s) for s in range(2)]
    init = jax.device_get(init_state(spec, BASE, make_optimizer(BASE)).params)["embedding"]["table"]
    one, _ = _run(BASE, spec, batches[:1])
    dense_one, _ = _run(dataclasses.replace(BASE, sparse_embeddings=False), spec, batches[:1])
    touched = np.unique(np.asarray(lookup_rows(spec, batches[0])[0]))
    moved = np.flatnonzero(np.any(one["embedding"]["table"] != init, axis=1))
    np.testing.assert_array_equal(moved, touched)
    # On the first step lazy Adam and Adam agree everywhere (zero moments off the batch).
    np.testing.assert_allclose(
        one["embedding"]["table"], dense_one["embedding"]["table"], rtol=1e-6
    )
    two, _ = _run(BASE, spec, batches)
    dense_two, _ = _run(dataclasses.replace(BASE, sparse_embeddings=False), spec, batches)
    only_first = np.setdiff1d(touched, np.asarray(lookup_rows(spec, batches[1])[0]))
    assert len(only_first) > 0
    # Rows of step 1 only: lazy Adam leaves them alone in step 2, dense Adam keeps moving them.
    np.testing.assert_array_equal(
        two["embedding"]["table"][only_first], one["embedding"]["table"][only_first]
    )
    assert not np.allclose(
        dense_two["embedding"]["table"][only_first], one["embedding"]["table"][only_first]
    )


@pytest.mark.slow
def test_masked_bag_entries_are_not_touched():
    spec = dataclasses.replace(tiny_spec(edge_mode="none", searched=False), bag_vocab_sizes=(5,))
    batch = tiny_batch(2)
    batch["bag_ids"] = np.array([[[1, 3]], [[2, 4]]], np.int32)
    batch["bag_mask"] = np.array([[[1, 0]], [[1, 0]]], np.float32)  # ids 3 and 4 are padding
    batch["bag_values"] = batch["bag_mask"]
    rows, _, _, n = _unique(spec, batch)
    first_bag = sum(VOCABS)
    real = set(np.asarray(rows[: int(n)]).tolist())
    assert first_bag + 1 in real and first_bag + 2 in real
    assert first_bag + 3 not in real and first_bag + 4 not in real


@pytest.mark.parametrize("sparse", [True, False])
def test_no_recompilation_between_steps(sparse):
    spec = tiny_spec(edge_mode="hierarchical")
    cfg = dataclasses.replace(BASE, sparse_embeddings=sparse)
    _, update = _run(cfg, spec, [tiny_batch(16, seed=s) for s in range(4)])
    assert update._cache_size() == 1


def test_compiled_step_never_copies_a_table_sized_buffer():
    """A copy of the table, a moment or the dedupe scratch would make every step O(vocabulary)
    (XLA inserts one when an in-place scatter's buffer is still read elsewhere)."""
    spec = dataclasses.replace(
        tiny_spec(edge_mode="hierarchical"), vocab_sizes=(40_000, *VOCABS[1:])
    )
    opt = make_optimizer(BASE)
    update = make_update_fn(spec, BASE, opt)
    hlo = update.lower(init_state(spec, BASE, opt), tiny_batch(16)).compile().as_text()
    v = spec.table_rows
    sized = re.compile(rf"= (s32\[{v}\]|f32\[{v},{spec.model.embed_dim}\])\S* (copy|fusion)\(")
    copies = [line.strip() for line in hlo.splitlines() if sized.search(line)]
    copies = [c for c in copies if " copy(" in c or ("kind=kLoop" in c and "scatter" not in c)]
    assert not copies, copies


def test_dense_gradient_is_refused_by_a_sparse_optimiser():
    from autoheri_jax.train.sparse_embedding import lazy_adam

    tx = lazy_adam(1e-2)
    state = tx.init({"t": jnp.zeros((3, 2))})
    with pytest.raises(TypeError, match="dense gradient"):
        tx.update({"t": jnp.ones((3, 2))}, state)
