import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from autoheri_jax.config import TrainConfig
from autoheri_jax.model.network import lookup_rows
from autoheri_jax.optim import make_optimizer
from autoheri_jax.sparse_rows import unique_lookup_rows
from autoheri_jax.train import init_state, make_update_fn
from tests.helpers import VOCABS, tiny_batch, tiny_spec

BASE = TrainConfig(epochs=1, batch_size=16, lr=1e-2, arch_lr=1e-2, entropy_weight=0.0)


def _run(cfg, spec, batches):
    opt = make_optimizer(cfg)
    state = init_state(spec, cfg, opt)
    update = make_update_fn(spec, cfg, opt)
    for b in batches:
        state, _ = update(state, b)
    return jax.device_get(state.params), update


def test_unique_rows_are_exact_and_padded_with_the_sentinel():
    spec = tiny_spec(edge_mode="none", searched=False)
    batch = tiny_batch(16)
    rows, single_idx, bag_idx, n = unique_lookup_rows(spec, batch)
    flat = np.asarray(lookup_rows(spec, batch)[0]).ravel()
    want = np.unique(flat)
    assert rows.shape == (flat.size,) and bag_idx is None
    assert int(n) == len(want)
    np.testing.assert_array_equal(rows[: len(want)], want)
    assert np.all(np.asarray(rows[len(want) :]) == spec.table_rows)  # out-of-range sentinel
    np.testing.assert_array_equal(np.asarray(rows)[np.asarray(single_idx)], flat.reshape(16, -1))


def test_rowwise_adagrad_equals_dense_adagrad():
    spec = tiny_spec(edge_mode="hierarchical")
    batches = [tiny_batch(16, seed=s) for s in range(5)]
    cfg = dataclasses.replace(BASE, embedding_optimizer="adagrad")
    sparse, _ = _run(cfg, spec, batches)
    dense, _ = _run(dataclasses.replace(cfg, sparse_embeddings=False), spec, batches)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-6, atol=1e-7), sparse, dense)


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


def test_masked_bag_entries_are_not_touched():
    spec = dataclasses.replace(tiny_spec(edge_mode="none", searched=False), bag_vocab_sizes=(5,))
    batch = tiny_batch(2)
    batch["bag_ids"] = np.array([[[1, 3]], [[2, 4]]], np.int32)
    batch["bag_mask"] = np.array([[[1, 0]], [[1, 0]]], np.float32)  # ids 3 and 4 are padding
    batch["bag_values"] = batch["bag_mask"]
    rows, _, _, n = unique_lookup_rows(spec, batch)
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


def test_dense_gradient_is_refused_by_a_sparse_optimiser():
    from autoheri_jax.sparse_rows import lazy_adam

    tx = lazy_adam(1e-2)
    state = tx.init({"t": jnp.zeros((3, 2))})
    with pytest.raises(TypeError, match="dense gradient"):
        tx.update({"t": jnp.ones((3, 2))}, state)


@pytest.mark.parametrize("seed", range(4))
def test_sorted_unique_is_sorted_padded_and_inverts(seed):
    from autoheri_jax.sparse_rows import sorted_unique

    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.integers(0, 50 if seed else 1, 300), jnp.int32)  # seed 0: all equal
    x = x.at[:7].set(60)  # some sentinel (masked) entries
    uniq, inv = jax.jit(sorted_unique, static_argnums=(1, 2))(x, 300, 60)
    n = len(np.unique(np.asarray(x)))
    np.testing.assert_array_equal(uniq[:n], np.unique(np.asarray(x)))
    assert np.all(np.asarray(uniq[n:]) == 60) and inv.dtype == jnp.int32
    np.testing.assert_array_equal(uniq[inv], x)
