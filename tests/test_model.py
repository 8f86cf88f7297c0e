import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from autoheri_jax.model.edges import Edge, candidate_edges, parse_edge
from autoheri_jax.model.embedding import embed
from autoheri_jax.model.gates import edge_probabilities
from autoheri_jax.model.losses import entire_space_bce
from autoheri_jax.model.network import forward, init_params
from tests.helpers import VOCABS, tiny_batch, tiny_spec


def test_shape_contracts():
    spec = tiny_spec(edge_mode="hierarchical")
    params = init_params(jax.random.key(0), spec)
    batch = tiny_batch(16)
    assert embed(params, spec, batch).shape == (16, len(VOCABS), 4)
    assert forward(params, spec, batch).shape == (16, 2)
    assert params["embedding"]["table"].shape == (128, 4)  # 26 rows used, padded to 128
    assert spec.vocab_rows == sum(VOCABS) and spec.table_rows == 128
    # conversion layer 1 sees its own 8-wide input plus every click layer (8 + 6 + 5)
    assert params["towers"]["task_1"]["layer_1"]["kernel"].shape == (8 + 8 + 6 + 5, 6)
    assert params["towers"]["task_0"]["layer_1"]["kernel"].shape == (8, 6)
    assert params["arch"]["edge_logits"].shape == (9,)


def test_embedding_rows_are_per_field():
    spec = tiny_spec(edge_mode="none", searched=False)
    params = init_params(jax.random.key(0), spec)
    sparse = jnp.array([[1, 0, 0, 0]], jnp.int32)
    table = params["embedding"]["table"]
    out = embed(params, spec, {"sparse": sparse})
    np.testing.assert_array_equal(out[0, 0], table[1])
    np.testing.assert_array_equal(out[0, 1], table[VOCABS[0]])  # field 1's id 0 is its own row


@pytest.mark.parametrize(
    ("mode", "pairs", "tasks", "count"),
    [
        ("none", "adjacent", 2, 0),
        ("parallel", "adjacent", 2, 3),
        ("hierarchical", "adjacent", 2, 9),
        ("hierarchical", "adjacent", 3, 18),
        ("hierarchical", "all", 3, 27),
        ("parallel", "all", 3, 9),
    ],
)
def test_candidate_edge_counts(mode, pairs, tasks, count):
    edges = candidate_edges(mode, tasks, 3, pairs)
    assert len(edges) == count
    assert all(e.src_task < e.dst_task for e in edges)
    if mode == "parallel":
        assert all(e.src_layer == e.dst_layer for e in edges)


def test_fixed_edges_parse_and_reject():
    assert parse_edge(" 0.2 -> 1.0 ") == Edge(0, 2, 1, 0)
    with pytest.raises(ValueError, match="u.i->d.j"):
        parse_edge("click->cvr")
    with pytest.raises(ValueError, match="upstream < downstream"):
        candidate_edges("fixed", 2, 3, fixed=("1.0->0.0",))
    with pytest.raises(ValueError, match="layers"):
        candidate_edges("fixed", 2, 3, fixed=("0.3->1.0",))


def test_gates_at_zero_equal_independent_towers():
    key = jax.random.key(3)
    full = tiny_spec(edge_mode="hierarchical")
    esmm = tiny_spec(edge_mode="none", searched=False)
    p_full, p_esmm = init_params(key, full), init_params(key, esmm)
    # own blocks are initialised bitwise alike, whatever edges a variant adds
    for t in range(2):
        for j in range(3):
            own = p_esmm["towers"][f"task_{t}"][f"layer_{j}"]["kernel"]
            np.testing.assert_array_equal(
                p_full["towers"][f"task_{t}"][f"layer_{j}"]["kernel"][: own.shape[0]], own
            )
    batch = tiny_batch(32)
    gated = forward(p_full, full, batch, gates=jnp.zeros(9))
    alone = forward(p_esmm, esmm, batch)
    np.testing.assert_allclose(gated, alone, rtol=1e-6, atol=1e-6)
    opened = forward(p_full, full, batch, gates=jnp.ones(9))
    assert not np.allclose(opened[:, 1], alone[:, 1])  # edges do change the downstream tower
    np.testing.assert_allclose(opened[:, 0], alone[:, 0], rtol=1e-6)  # never the upstream one


def test_search_gates_are_sigmoid_of_logits():
    spec = tiny_spec(edge_mode="parallel")
    params = init_params(jax.random.key(0), spec, init_edge_logit=1.5)
    np.testing.assert_allclose(edge_probabilities(params, spec), jax.nn.sigmoid(1.5) * np.ones(3))
    unsearched = tiny_spec(edge_mode="parallel", searched=False)
    assert "arch" not in init_params(jax.random.key(0), unsearched)
    np.testing.assert_array_equal(edge_probabilities({}, unsearched), np.ones(3))


@pytest.mark.slow
def test_gradients_reach_arch_params():
    spec = tiny_spec(edge_mode="hierarchical")
    params = init_params(jax.random.key(0), spec)
    batch = tiny_batch(64)

    def loss(p):
        return jnp.sum(entire_space_bce(forward(p, spec, batch), batch["labels"]))

    grads = jax.grad(loss)(params)
    g = np.asarray(grads["arch"]["edge_logits"])
    assert g.shape == (9,) and np.all(np.isfinite(g)) and np.count_nonzero(g) == 9


@pytest.mark.slow
@pytest.mark.parametrize("detach", [False, True])
def test_detach_upstream_switch(detach):
    spec = tiny_spec(edge_mode="hierarchical", detach_upstream=detach)
    params = init_params(jax.random.key(0), spec)
    batch = tiny_batch(32)
    downstream = lambda p: jnp.sum(forward(p, spec, batch)[:, 1])
    g = jax.grad(downstream)(params)["towers"]["task_0"]["layer_0"]["kernel"]
    assert (np.abs(np.asarray(g)).max() == 0) == detach


@pytest.mark.slow
def test_three_task_chain_forward():
    spec = tiny_spec(num_tasks=3, edge_mode="hierarchical", edge_pairs="all")
    params = init_params(jax.random.key(0), spec)
    batch = tiny_batch(8, num_tasks=3)
    assert forward(params, spec, batch).shape == (8, 3)
    assert {e.dst_task for e in spec.edges} == {1, 2}


@pytest.mark.parametrize(("pooling", "weighted"), [("mean", False), ("sum", False), ("sum", True)])
def test_bag_fields_pool_their_entries(pooling, weighted):
    spec = tiny_spec(
        edge_mode="none", searched=False, bag_pooling=pooling, bag_value_weighted=weighted
    )
    spec = dataclasses.replace(spec, bag_vocab_sizes=(6, 4))
    params = init_params(jax.random.key(0), spec)
    table = np.asarray(params["embedding"]["table"])
    assert spec.vocab_rows == sum(VOCABS) + 10 and table.shape == (128, 4)
    batch = tiny_batch(3)
    batch["bag_ids"] = np.array(
        [[[1, 2, 5], [3, 0, 0]], [[4, 4, 0], [0, 0, 0]], [[0, 0, 0], [1, 0, 0]]], np.int32
    )
    batch["bag_mask"] = np.array(
        [[[1, 1, 1], [1, 0, 0]], [[1, 1, 0], [0, 0, 0]], [[0, 0, 0], [1, 0, 0]]], np.float32
    )
    batch["bag_values"] = batch["bag_mask"] * 2.0
    out = np.asarray(embed(params, spec, batch))
    assert out.shape == (3, len(VOCABS) + 2, 4)
    first_bag_row = sum(VOCABS)
    rows = table[first_bag_row + np.array([1, 2, 5])]
    scale = 2.0 if weighted else 1.0
    want = rows.mean(0) if pooling == "mean" else scale * rows.sum(0)
    np.testing.assert_allclose(out[0, len(VOCABS)], want, rtol=1e-6)
    np.testing.assert_allclose(out[1, len(VOCABS) + 1], 0.0)  # empty bag pools to zero
    np.testing.assert_allclose(
        out[2, len(VOCABS) + 1], scale * table[first_bag_row + 6 + 1], rtol=1e-6
    )
    assert forward(params, spec, batch).shape == (3, 2)


def test_model_input_and_conditional_stage_probabilities():
    from autoheri_jax.model.embedding import model_input
    from autoheri_jax.model.losses import funnel_log_probs, stage_probabilities

    spec = tiny_spec(edge_mode="parallel")
    assert spec.model.family == "autoheri" and spec.output == "conditional"
    params = init_params(jax.random.key(0), spec)
    batch = tiny_batch(8)
    x = model_input(params, spec, batch)
    assert x.shape == (8, spec.input_dim) == (8, len(VOCABS) * 4 + 2)
    np.testing.assert_array_equal(x[:, -2:], batch["dense"])
    logits = forward(params, spec, batch)
    cond, entire = stage_probabilities(logits, spec)
    np.testing.assert_array_equal(cond, jax.nn.sigmoid(logits))
    np.testing.assert_array_equal(entire, jnp.exp(funnel_log_probs(logits)[0]))


@pytest.mark.slow
def test_gated_concat_equals_the_layer_formula():
    from autoheri_jax.model.network import gated_concat

    keys = jax.random.split(jax.random.key(3), 5)
    h = jax.random.normal(keys[0], (6, 5))
    reps = [jax.random.normal(keys[1], (6, 4)), jax.random.normal(keys[2], (6, 3))]
    kernel = jax.random.normal(keys[3], (5 + 4 + 3, 7))
    gates = jnp.asarray([0.3, 0.9])

    def formula(kernel, gates):
        return jnp.concatenate([h, gates[0] * reps[0], gates[1] * reps[1]], axis=-1) @ kernel

    def fast(kernel, gates, own_pre=None):
        return gated_concat(kernel, h, reps, [gates[0], gates[1]], own_pre)

    want = formula(kernel, gates)
    np.testing.assert_allclose(fast(kernel, gates), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(fast(kernel, gates, h @ kernel[:5]), want, rtol=1e-5, atol=1e-5)
    for argnum in (0, 1):  # the gradients the search trains on agree too
        g_fast = jax.grad(lambda *a: fast(*a).sum(), argnums=argnum)(kernel, gates)
        g_ref = jax.grad(lambda *a: formula(*a).sum(), argnums=argnum)(kernel, gates)
        np.testing.assert_allclose(g_fast, g_ref, rtol=1e-5, atol=1e-5)
    alone = gated_concat(kernel[:5], h, [], [])
    np.testing.assert_allclose(alone, h @ kernel[:5], rtol=1e-6)
    assert gated_concat(kernel[:5], h, [], [], own_pre=want) is want


def test_named_random_streams_keep_their_tags_and_bounds():
    from autoheri_jax import rng

    key = jax.random.key(0)
    code = rng.edge_code(1, 2)
    assert code == 1 + 1000 + 2
    same = lambda a, b: np.array_equal(jax.random.key_data(a), jax.random.key_data(b))
    assert same(rng.edge_stream(key, "edge_block", code), jax.random.fold_in(key, code + 1))
    assert same(rng.stream(key, "aggregation"), jax.random.fold_in(key, 1_000_000))
    assert same(rng.stream(key, "own_block"), jax.random.fold_in(key, 0))
    with pytest.raises(ValueError, match="outside"):
        rng.stream(key, "layer", rng.MAX_LAYERS + 1)
    with pytest.raises(ValueError, match="outside the key space"):
        rng.edge_code(0, rng.MAX_LAYERS)
    spans = {}
    for name, s in rng.STREAMS.items():  # no two streams of one parent share a tag
        for other, (lo, hi) in spans.get(s.parent, {}).items():
            assert s.base + s.size <= lo or hi <= s.base, (name, other)
        spans.setdefault(s.parent, {})[name] = (s.base, s.base + s.size)


@pytest.mark.parametrize(("num_tasks", "edge_pairs"), [(2, "adjacent"), (3, "all")])
def test_a_batch_of_masks_equals_one_forward_per_mask(num_tasks, edge_pairs):
    """forward with gates [M, E] (the masked search's contrast) computes every edge's product
    once; it must give each mask's own forward, also where a masked tower feeds another."""
    spec = tiny_spec(num_tasks=num_tasks, edge_mode="hierarchical", edge_pairs=edge_pairs)
    params = init_params(jax.random.key(4), spec)
    batch = {k: v for k, v in tiny_batch(12, num_tasks=num_tasks).items() if k != "labels"}
    masks = (np.random.default_rng(0).random((7, spec.num_edges)) < 0.5).astype(np.float32)
    masks[0] = 0.0  # all off: the independent towers
    batched = np.asarray(forward(params, spec, batch, gates=jnp.asarray(masks)))
    assert batched.shape == (7, 12, num_tasks)
    for m, mask in enumerate(masks):
        one = np.asarray(forward(params, spec, batch, gates=jnp.asarray(mask)))
        np.testing.assert_allclose(batched[m], one, rtol=1e-5, atol=1e-5)
    assert np.abs(batched[1:] - batched[:1]).max() > 1e-3  # the masks did change the logits


def test_a_batch_of_masks_is_refused_for_edge_ops_other_than_concat():
    spec = tiny_spec(edge_mode="hierarchical", aggregation="gated_sum")
    params = init_params(jax.random.key(0), spec)
    masks = jnp.ones((3, spec.num_edges))
    with pytest.raises(ValueError, match=r"gates \[M, E\] need concat edges"):
        forward(params, spec, tiny_batch(4), gates=masks)
