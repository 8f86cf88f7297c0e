"""A model family added the documented way (docs/architecture.md, "Where to add"): its init,
apply, logit kind and objective registered once in `model/families.py:FAMILIES`, its name and
the settings it reads in `model/config.py:FAMILY_SETTINGS`. Nothing else learns about it, yet
the spec, the objective and the trainer all use it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from autoheri_jax.config import ModelConfig, TrainConfig
from autoheri_jax.model import config as model_config
from autoheri_jax.model import families
from autoheri_jax.model.blocks import heads_apply, heads_init, mlp_apply, mlp_init, out_dim
from autoheri_jax.model.build import build_spec
from autoheri_jax.model.families import Family, family_task_loss
from autoheri_jax.model.network import forward_outputs, init_params
from autoheri_jax.train.fit import train_model
from tests.helpers import tiny_funnel


def _init(key, spec):
    k_tower, k_head = jax.random.split(key)
    return {
        "tower": mlp_init(k_tower, spec.num_tasks, spec.input_dim, spec.model.tower_hidden),
        "head": heads_init(
            k_head, spec.num_tasks, out_dim(spec.model.tower_hidden, spec.input_dim)
        ),
    }


def _apply(towers, spec, x, act, drop):
    per_task = jnp.broadcast_to(x[:, None, :], (x.shape[0], spec.num_tasks, x.shape[-1]))
    return heads_apply(towers["head"], mlp_apply(towers["tower"], per_task, act, drop)), {}


def _doubled(logits, extras, labels, spec, terms):  # an objective only this family has
    terms["debias"] = jnp.sum(terms["stage_bce"])
    return 2.0 * jnp.sum(terms["stage_bce"]), terms


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setitem(
        families.FAMILIES,
        "toy",
        Family(_init, _apply, objective=_doubled),
    )
    monkeypatch.setitem(model_config.FAMILY_SETTINGS, "toy", ("tower_hidden",))
    return ModelConfig(
        family="toy", edge_mode="none", embed_dim=4, tower_hidden=(12,), num_experts=9
    )


def test_a_registered_family_builds_reads_its_settings_and_uses_its_objective(toy):
    tr, _ = tiny_funnel()
    spec = build_spec(toy, tr.vocab_sizes, tr.num_dense, tr.num_stages)
    assert spec.model.family == "toy" and spec.output == "conditional" and spec.num_edges == 0
    assert spec.model.tower_hidden == (12,)  # its own setting, read through the spec
    assert spec.model.num_experts == ModelConfig().num_experts  # another family's: reset
    params = init_params(jax.random.key(0), spec)
    assert jax.tree.map(jnp.shape, params["towers"]) == jax.tree.map(
        jnp.shape, _init(jax.random.key(1), spec)
    )
    batch = tr.batch(np.arange(64))
    logits, extras = forward_outputs(params, spec, batch)
    assert logits.shape == (64, tr.num_stages)
    loss, terms = family_task_loss(logits, extras, batch["labels"], spec)
    np.testing.assert_allclose(loss, 2.0 * jnp.sum(terms["stage_bce"]), rtol=1e-6)
    assert float(terms["debias"]) > 0  # the registered objective ran, not the default


def test_a_registered_family_trains(toy):
    tr, _ = tiny_funnel()
    spec = build_spec(toy, tr.vocab_sizes, tr.num_dense, tr.num_stages)
    records = []
    cfg = TrainConfig(epochs=2, batch_size=128, lr=1e-2, log_every=8)
    state, _ = train_model(
        spec, cfg, tr, desc="toy", progress=False, on_log=lambda s, r: records.append(r)
    )
    assert records[-1]["loss"] < 0.9 * records[0]["loss"]
    assert set(state.params["towers"]) == {"tower", "head"}
