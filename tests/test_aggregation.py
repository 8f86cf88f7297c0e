import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from autoheri_jax.config import Config, ConfigError, ModelConfig
from autoheri_jax.data.simulator import simulate_funnel
from autoheri_jax.model import aggregation
from autoheri_jax.model.build import build_spec
from autoheri_jax.model.edges import Edge
from autoheri_jax.model.gates import edge_probabilities, op_probabilities
from autoheri_jax.model.network import forward, init_params
from autoheri_jax.model.variants import derived_model
from autoheri_jax.search import architecture
from autoheri_jax.search.architecture import derive_edges, derive_ops
from autoheri_jax.train.fit import train_model
from tests.helpers import VOCABS, gated, tiny_batch, tiny_spec

FAST = gated(arch_warmup_steps=0, epochs=2, batch_size=128, lr=1e-2, arch_lr=5e-2, log_every=4)
FIXED_OPS = ("gated_sum", "attention")


@pytest.mark.parametrize("agg", [*FIXED_OPS, "search"])
def test_shapes(agg):
    spec = tiny_spec(edge_mode="hierarchical", aggregation=agg)
    params = init_params(jax.random.key(0), spec)
    assert forward(params, spec, tiny_batch(16)).shape == (16, 2)
    layer = params["towers"]["task_1"]["layer_1"]
    own = 8  # hidden[0]
    concat_rows = 8 + 6 + 5 if agg == "search" else 0
    assert layer["kernel"].shape == (own + concat_rows, 6)
    for key, width in [("0_0", 8), ("0_1", 6), ("0_2", 5)]:
        assert layer["proj"][key]["kernel"].shape == (width, own)
        if agg != "attention":
            assert layer["proj"][key]["gate"].shape == (own,)
    if agg != "gated_sum":
        assert layer["attn"]["query"].shape == (own, min(own, aggregation.ATTN_DIM))
    # the click tower has no incoming edges: plain layers
    assert set(params["towers"]["task_0"]["layer_1"]) == {"kernel", "bias"}
    assert ("op_logits" in params["arch"]) == (agg == "search")
    if agg == "search":
        assert params["arch"]["op_logits"].shape == (9, 3)
        np.testing.assert_allclose(op_probabilities(params, spec), 1 / 3, rtol=1e-6)


@pytest.mark.parametrize("agg", ["concat", *FIXED_OPS, "search"])
def test_gates_at_zero_equal_independent_towers(agg):
    key = jax.random.key(3)
    full = tiny_spec(edge_mode="hierarchical", aggregation=agg)
    esmm = tiny_spec(edge_mode="none", searched=False)
    p_full, p_esmm = init_params(key, full), init_params(key, esmm)
    batch = tiny_batch(32)
    gated = forward(p_full, full, batch, gates=jnp.zeros(9))
    np.testing.assert_allclose(gated, forward(p_esmm, esmm, batch), rtol=1e-6, atol=1e-6)
    # and the edges matter once their gates open
    opened = forward(p_full, full, batch, gates=jnp.ones(9))
    assert not np.allclose(opened[:, 1], gated[:, 1])


def test_concat_default_is_bitwise_unchanged():
    spec = tiny_spec(edge_mode="hierarchical")
    explicit = tiny_spec(edge_mode="hierarchical", aggregation="concat")
    assert spec == explicit and spec.edge_ops == ()
    params = init_params(jax.random.key(0), spec)
    assert set(params["arch"]) == {"edge_logits"}
    assert set(params["towers"]["task_1"]["layer_1"]) == {"kernel", "bias"}


def test_attention_weights_sum_to_one_and_gate_membership():
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    own = jax.random.normal(k1, (10, 8))
    items = 5.0 * jax.random.normal(k2, (10, 3, 8))
    attn = aggregation.init_layer(k3, 8, [aggregation.EdgeSlot("0_0", 1, 8, "attention")])["attn"]
    alpha = aggregation.attention_weights(attn, own, items, jnp.array([1.0, 0.3, 0.7]))
    assert alpha.shape == (10, 4)
    np.testing.assert_allclose(alpha.sum(axis=1), 1.0, rtol=1e-6)
    assert np.all(alpha > 0)
    off = aggregation.attention_weights(attn, own, items, jnp.array([0.0, 1.0, 0.0]))
    np.testing.assert_allclose(off.sum(axis=1), 1.0, rtol=1e-6)
    assert np.all(off[:, 1] == 0) and np.all(off[:, 3] == 0)
    none = aggregation.attention_weights(attn, own, items, jnp.zeros(3))
    np.testing.assert_array_equal(none, np.eye(4)[[0] * 10])
    # gradients stay finite with absent items
    grad = jax.grad(lambda m: aggregation.attention_weights(attn, own, items, m)[:, 0].sum())(
        jnp.array([0.0, 0.5, 0.0])
    )
    assert np.all(np.isfinite(grad))


def _data(num_rows=4000):
    return simulate_funnel(
        num_rows=num_rows,
        seed=0,
        num_stages=2,
        num_users=300,
        num_items=600,
        click_rate=0.15,
        stage_rates=(0.3,),
        cascade_strength=0.7,
    )


def _spec(data, **kw):
    model = ModelConfig(embed_dim=4, hidden=(16, 8), **kw)
    return build_spec(model, data.vocab_sizes, data.num_dense, data.num_stages, searched=True)


@pytest.mark.slow
@pytest.mark.parametrize("agg", [*FIXED_OPS, "search"])
def test_each_operator_trains(agg):
    data = _data()
    spec = _spec(data, edge_mode="hierarchical", aggregation=agg)
    records = []
    state, _ = train_model(
        spec, FAST, data, desc=agg, progress=False, on_log=lambda s, r: records.append(r)
    )
    assert records[-1]["loss"] < 0.8 * records[0]["loss"]
    if agg == "search":
        start = np.zeros((spec.num_edges, 3))
        assert not np.allclose(np.asarray(state.params["arch"]["op_logits"]), start)


@pytest.mark.slow
def test_search_derives_argmax_ops_and_the_derived_model_runs():
    data = _data(2000)
    model = ModelConfig(embed_dim=4, hidden=(16, 8), aggregation="search")
    spec = build_spec(model, data.vocab_sizes, data.num_dense, data.num_stages, searched=True)
    state, _ = train_model(spec, FAST, data, desc="search", progress=False)
    params = jax.device_get(state.params)
    # force a known preference on two edges, then derive
    logits = np.array(params["arch"]["op_logits"])
    logits[0] = [0.0, 3.0, 0.0]
    logits[1] = [0.0, 0.0, 3.0]
    params["arch"]["op_logits"] = jnp.asarray(logits)
    params["arch"]["edge_logits"] = jnp.asarray(
        np.where(np.arange(spec.num_edges) < 3, 4.0, -4.0), jnp.float32
    )
    ops = derive_ops(params, spec)
    assert ops[:2] == ["gated_sum", "attention"]
    assert ops == [aggregation.OPS[i] for i in np.argmax(logits, axis=1)]
    probs = np.asarray(edge_probabilities(params, spec))
    record = architecture.architecture_record(
        spec.edges,
        probs,
        np.asarray(params["arch"]["edge_logits"]),
        0.5,
        data.stage_names,
        "hierarchical",
        op_probs=np.asarray(op_probabilities(params, spec)),
        op_names=aggregation.OPS,
    )
    assert [c.op for c in record.candidates] == ops
    assert list(record.kept) == [e.name for e in derive_edges(probs, spec.edges, 0.5)]
    assert list(record.kept_ops) == ops[:3]
    assert "gated_sum" in architecture.render_architecture(record, 2)
    derived = derived_model(model, architecture.kept_edges(record), architecture.kept_ops(record))
    assert derived.aggregation == "concat"
    assert derived.fixed_edges[:2] == (
        f"{spec.edges[0].name}:gated_sum",
        f"{spec.edges[1].name}:attention",
    )
    dspec = build_spec(derived, data.vocab_sizes, data.num_dense, data.num_stages)
    assert dspec.edge_ops == tuple(ops[:3]) and dspec.edges == spec.edges[:3]
    assert not dspec.searched
    dparams = init_params(jax.random.key(1), dspec)
    assert "arch" not in dparams
    out = forward(dparams, dspec, data.batch(np.arange(64)))
    assert out.shape == (64, 2) and np.all(np.isfinite(out))
    train_model(dspec, dataclasses.replace(FAST, epochs=1), data, desc="derived", progress=False)


def test_fixed_edge_ops_parse_and_reject():
    spec = tiny_spec(
        edge_mode="fixed", searched=False, fixed_edges=("0.1->1.1:attention", "0.0->1.1")
    )
    assert spec.edges == (Edge(0, 0, 1, 1), Edge(0, 1, 1, 1))
    assert spec.edge_ops == ("concat", "attention")
    params = init_params(jax.random.key(0), spec)
    layer = params["towers"]["task_1"]["layer_1"]
    assert layer["kernel"].shape == (8 + 8, 6) and set(layer["proj"]) == {"0_1"}
    assert forward(params, spec, tiny_batch(8)).shape == (8, 2)
    with pytest.raises(ConfigError, match="fixed_edges"):
        ModelConfig(edge_mode="fixed", fixed_edges=("0.0->1.0:sum",))
    with pytest.raises(ConfigError, match="fixed_edges"):
        ModelConfig(edge_mode="fixed", aggregation="search", fixed_edges=("0.0->1.0:attention",))
    with pytest.raises(ConfigError, match="aggregation"):
        ModelConfig(aggregation="mean")
    with pytest.raises(ConfigError, match="aggregation='search'.*gated search"):
        tiny_spec(aggregation="search", searched=False)
    with pytest.raises(ConfigError, match="model.aggregation.*needs edge_search.method=gradient"):
        Config(model=ModelConfig(aggregation="search"))
    assert len(VOCABS) == 4


def test_entropy_term_covers_the_operator_choice():
    from autoheri_jax.train.step import make_loss_fn

    spec = tiny_spec(edge_mode="parallel", aggregation="search")
    params = init_params(jax.random.key(0), spec)
    loss_fn = make_loss_fn(spec, gated(entropy_weight=1.0))
    batch = tiny_batch(8)
    step = jnp.zeros((), jnp.int32)
    uniform = loss_fn(params, batch, jax.random.key(1), step)[1]["entropy"]
    params["arch"]["op_logits"] = params["arch"]["op_logits"].at[:, 0].set(30.0)
    sharp = loss_fn(params, batch, jax.random.key(1), step)[1]["entropy"]
    # each edge's choice uniform over 3 ops; the term sums over edges
    np.testing.assert_allclose(uniform - sharp, spec.num_edges * np.log(3.0), rtol=1e-5)
