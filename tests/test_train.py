import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from autoheri_jax.config import ConfigError, DataConfig, ModelConfig
from autoheri_jax.data.simulator import simulate_funnel
from autoheri_jax.metrics import funnel_metrics
from autoheri_jax.model.build import build_spec
from autoheri_jax.model.gates import edge_probabilities
from autoheri_jax.train.fit import train_model
from autoheri_jax.train.loop import NonFiniteLossError
from autoheri_jax.train.optim import make_optimizer, param_labels
from autoheri_jax.train.predict import predict_dataset
from autoheri_jax.train.step import init_state, make_update_fn
from tests.helpers import gated, tiny_batch, tiny_spec

FAST = gated(arch_warmup_steps=0, epochs=1, batch_size=128, lr=1e-2, arch_lr=5e-2, log_every=4)


def _data(num_rows=6000, stages=2, seed=0):
    rates = (0.3,) if stages == 2 else (0.4, 0.4)
    return simulate_funnel(
        num_rows=num_rows,
        seed=seed,
        num_stages=stages,
        num_users=300,
        num_items=600,
        click_rate=0.15,
        stage_rates=rates,
        cascade_strength=0.7,
    )


def _spec(data, searched=True, **kw):
    model = ModelConfig(embed_dim=4, hidden=(16, 8), **kw)
    return build_spec(model, data.vocab_sizes, data.num_dense, data.num_stages, searched=searched)


def test_param_labels_route_groups_by_path():
    spec = tiny_spec(edge_mode="parallel")
    params = init_state(spec, FAST, make_optimizer(FAST)).params
    labels = param_labels(params)
    assert labels["arch"]["edge_logits"] == "arch"
    assert labels["embedding"]["table"] == "embeddings"
    assert set(jax.tree.leaves(labels["towers"])) == {"weights"}
    with pytest.raises(KeyError, match="extra"):
        param_labels({"extra": {"w": jnp.zeros(2)}})


def test_one_joint_step_moves_each_partition_with_its_own_rate():
    spec = tiny_spec(edge_mode="parallel")
    batch = tiny_batch(64)
    moved = {}
    for arch_lr in (1e-3, 1e-1):
        cfg = gated(FAST, lr=1e-3, arch_lr=arch_lr, entropy_weight=0.0, arch_optimizer="adam")
        opt = make_optimizer(cfg)
        state = init_state(spec, cfg, opt)
        before = jax.device_get(state.params)
        state, _ = make_update_fn(spec, cfg, opt)(state, batch)
        after = jax.device_get(state.params)
        moved[arch_lr] = (
            np.abs(after["arch"]["edge_logits"] - before["arch"]["edge_logits"]).max(),
            np.abs(
                after["towers"]["task_1"]["head"]["kernel"]
                - before["towers"]["task_1"]["head"]["kernel"]
            ).max(),
        )
    # Adam's first step moves each parameter by about its partition's learning rate.
    np.testing.assert_allclose(moved[1e-3][0], 1e-3, rtol=0.05)
    np.testing.assert_allclose(moved[1e-1][0], 1e-1, rtol=0.05)
    np.testing.assert_allclose(moved[1e-3][1], moved[1e-1][1], rtol=1e-6)  # weights unaffected


@pytest.mark.slow
def test_same_seed_is_bitwise_reproducible():
    data = _data(2048)
    spec = _spec(data, edge_mode="hierarchical")
    s1, _ = train_model(spec, FAST, data, desc="a", progress=False)
    s2, _ = train_model(spec, FAST, data, desc="b", progress=False)
    jax.tree.map(
        np.testing.assert_array_equal, jax.device_get(s1.params), jax.device_get(s2.params)
    )
    s3, _ = train_model(spec, dataclasses.replace(FAST, seed=1), data, desc="c", progress=False)
    assert not np.array_equal(s1.params["arch"]["edge_logits"], s3.params["arch"]["edge_logits"])


def test_max_steps_is_a_step_budget_that_the_epochs_cannot_exceed():
    """max_steps stops a run early, equal to the longer run's first steps; it never adds."""
    data = _data(2048)
    spec = _spec(data, edge_mode="hierarchical")
    cfg = gated(FAST, epochs=2, arch_warmup_steps=0)  # 32 steps
    records = []
    short, stats = train_model(
        spec,
        dataclasses.replace(cfg, max_steps=5),
        data,
        desc="a",
        progress=False,
        on_log=lambda s, r: records.append(s),
    )
    assert int(short.step) == 5 and stats["steps"] == 5 and records == [4, 5]
    five, _ = train_model(
        spec, dataclasses.replace(cfg, epochs=1, max_steps=5), data, desc="b", progress=False
    )
    jax.tree.map(
        np.testing.assert_array_equal, jax.device_get(short.params), jax.device_get(five.params)
    )
    whole, _ = train_model(
        spec, dataclasses.replace(cfg, max_steps=1000), data, desc="c", progress=False
    )
    assert int(whole.step) == 32
    with pytest.raises(ConfigError, match="max_steps"):
        dataclasses.replace(cfg, max_steps=-1)


@pytest.mark.parametrize("stages", [2, 3])
def test_search_learns_the_funnel(stages):
    data = _data(12000, stages=stages)
    tr, te = data.split([10000, 2000])
    spec = _spec(tr, edge_mode="hierarchical")
    records = []
    cfg = dataclasses.replace(FAST, epochs=3)
    state, stats = train_model(
        spec, cfg, tr, desc="t", progress=False, on_log=lambda s, r: records.append(r)
    )
    assert stats["steps"] == 3 * (10000 // 128)
    assert records[-1]["loss"] < 0.8 * records[0]["loss"]
    cond, entire = predict_dataset(spec, state.params, te, 512)
    m = funnel_metrics(te.labels, cond, entire, te.stage_names)
    assert m["ctr"]["auc"] > 0.6, m
    last = "ctcvr"
    assert m[last]["auc"] > 0.6, m
    probs = np.asarray(records[-1]["edge_probs"])
    assert probs.shape == (spec.num_edges,) and np.all((probs > 0) & (probs < 1))
    # the entropy term pushes the gates away from 0.5: without it (the same run otherwise)
    # they end nearer to it
    flat, _ = train_model(spec, gated(cfg, entropy_weight=0.0), tr, desc="t", progress=False)
    free = np.asarray(edge_probabilities(flat.params, spec))
    assert np.mean(np.minimum(probs, 1 - probs)) < np.mean(np.minimum(free, 1 - free)) - 0.02


def test_non_finite_loss_stops_with_the_step_and_keeps_the_last_good_state():
    data = _data(1024)
    bad_dense = np.zeros((data.num_rows, 1), np.float32)
    bad_dense[:] = np.nan
    bad = dataclasses.replace(data, dense=bad_dense, dense_names=("nan",))
    spec = _spec(bad, edge_mode="parallel")
    with pytest.raises(NonFiniteLossError, match="step 0"):
        train_model(spec, FAST, bad, desc="nan-run", progress=False)
    opt = make_optimizer(FAST)
    state = init_state(spec, FAST, opt)
    before = jax.device_get(state.params)
    state, _ = make_update_fn(spec, FAST, opt)(state, bad.batch(np.arange(128)))
    assert int(state.first_bad_step) == 0
    jax.tree.map(np.testing.assert_array_equal, before, jax.device_get(state.params))


def test_batch_larger_than_data_is_a_clear_error():
    data = _data(100)
    with pytest.raises(ConfigError, match="batch_size 128"):
        train_model(
            _spec(data, edge_mode="none", searched=False), FAST, data, desc="x", progress=False
        )


def test_data_config_defaults_match_simulator_defaults():
    d = DataConfig()
    assert (d.click_rate, d.stage_rates, d.cascade_strength) == (0.04, (0.1,), 0.5)


def test_bilevel_takes_the_arch_gradient_from_the_validation_batch():
    spec = tiny_spec(edge_mode="hierarchical")
    cfg = gated(FAST, bilevel=True, entropy_weight=0.0, lr=1e-3, arch_lr=1e-2)
    train_b, valid_b = tiny_batch(64, seed=1), tiny_batch(64, seed=2)
    opt = make_optimizer(cfg)
    single = gated(cfg, bilevel=False)
    results = {}
    for name, c, batch in [
        ("bilevel", cfg, {**train_b, "valid": valid_b}),
        ("train_only", single, train_b),
        ("valid_only", single, valid_b),
    ]:
        state = init_state(spec, c, opt)
        state, _ = make_update_fn(spec, c, opt)(state, batch)
        results[name] = jax.device_get(state.params)
    bi, tr, va = results["bilevel"], results["train_only"], results["valid_only"]
    # Equal up to float rounding: the two programs compile (and fuse) differently.
    close = dict(rtol=1e-6, atol=0)
    np.testing.assert_allclose(bi["arch"]["edge_logits"], va["arch"]["edge_logits"], **close)
    np.testing.assert_allclose(
        bi["towers"]["task_1"]["head"]["kernel"], tr["towers"]["task_1"]["head"]["kernel"], **close
    )
    assert not np.allclose(tr["arch"]["edge_logits"], va["arch"]["edge_logits"], **close)
    assert not np.allclose(bi["arch"]["edge_logits"], tr["arch"]["edge_logits"], **close)


def test_bilevel_search_runs_with_a_validation_split():
    data = _data(3000)
    tr, va = data.split([2000, 1000])
    spec = _spec(tr, edge_mode="parallel")
    cfg = gated(FAST, bilevel=True)
    records = []
    train_model(
        spec, cfg, tr, desc="bi", progress=False, valid=va, on_log=lambda s, r: records.append(r)
    )
    assert "valid_loss" in records[-1] and np.isfinite(records[-1]["valid_loss"])
    with pytest.raises(ConfigError, match="validation rows"):
        train_model(spec, cfg, tr, desc="bi", progress=False)
