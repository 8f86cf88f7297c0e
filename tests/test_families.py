"""The entire-space baselines (shared_bottom, mmoe, ple, aitm) and random edge masks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from autoheri_jax.config import FAMILIES as CONFIG_FAMILIES
from autoheri_jax.config import (
    Config,
    ConfigError,
    ModelConfig,
    TrainConfig,
    apply_overrides,
)
from autoheri_jax.experiment import model_configs
from autoheri_jax.metrics import funnel_metrics
from autoheri_jax.model import families
from autoheri_jax.model.build import build_spec
from autoheri_jax.model.edges import candidate_edges
from autoheri_jax.model.embedding import model_input
from autoheri_jax.model.families import ait_attention, mmoe_gate_weights
from autoheri_jax.model.losses import (
    entire_space_bce,
    label_constraint,
    stage_probabilities,
    task_losses,
)
from autoheri_jax.model.network import forward, init_params
from autoheri_jax.model.variants import VARIANTS
from autoheri_jax.search.records import ArchitectureRecord
from autoheri_jax.train.fit import train_model
from autoheri_jax.train.optim import param_labels
from tests.helpers import VOCABS, tiny_batch, tiny_funnel

FAMILIES = ("shared_bottom", "mmoe", "ple", "aitm")
SMALL = {
    "embed_dim": 4,
    "hidden": (16, 8),
    "bottom_hidden": (16, 8),
    "tower_hidden": (8,),
    "expert_hidden": (12, 8),
    "num_experts": 3,
}
FAST = TrainConfig(epochs=2, batch_size=128, lr=1e-2, log_every=8)


def _model(name: str, **kw) -> ModelConfig:
    return VARIANTS[name](ModelConfig(**{**SMALL, **kw}))


def _tiny(name: str, num_tasks: int = 2, **kw):
    return build_spec(_model(name, **kw), VOCABS, num_dense=2, num_tasks=num_tasks)


_INIT = jax.jit(init_params, static_argnums=1)
_FORWARD = jax.jit(forward, static_argnums=1)  # one compile per spec, not one per eager op


def _init(spec, seed: int = 0):
    return _INIT(jax.random.key(seed), spec)


def _forward(params, spec, batch, **kw):
    return _FORWARD(params, spec, batch, **kw)


def _predict(spec, params, data):
    """[N, T] (conditional, entire-space) probabilities through `stage_probabilities`."""
    batch = data.batch(np.arange(data.num_rows))
    batch.pop("labels")
    fn = jax.jit(lambda p, b: stage_probabilities(forward(p, spec, b), spec))
    return jax.device_get(fn(params, batch))


@pytest.mark.parametrize("num_tasks", [2, 3])
@pytest.mark.parametrize("name", FAMILIES)
def test_family_shapes_and_param_groups(name, num_tasks):
    spec = _tiny(name, num_tasks)
    params = _init(spec)
    batch = tiny_batch(16, num_tasks)
    logits = _forward(params, spec, batch)
    assert logits.shape == (16, num_tasks) and np.all(np.isfinite(logits))
    assert set(params) == {"embedding", "towers"} and spec.num_edges == 0
    assert params["embedding"]["table"].shape == (128, 4)  # the same table as every model
    assert set(jax.tree.leaves(param_labels(params)["towers"])) == {"weights"}
    assert spec.output == ("entire" if name == "aitm" else "conditional")
    cond, entire = stage_probabilities(logits, spec)
    assert cond.shape == entire.shape == (16, num_tasks)
    assert np.all((cond >= 0) & (cond <= 1) & (entire >= 0) & (entire <= 1))
    if spec.output == "conditional":  # a product chain never grows down the funnel
        assert np.all(np.diff(np.asarray(entire), axis=1) <= 0)
    rng = jax.random.key(1)
    dropped = _forward(params, spec.with_model(dropout=0.5), batch, dropout_rng=rng)
    assert not np.allclose(dropped, logits)


@pytest.mark.parametrize(
    ("name", "stages"),
    [("shared_bottom", 2), ("mmoe", 2), ("ple", 2), ("aitm", 2), ("aitm", 3), ("random_mask", 2)],
)
def test_family_learns_the_funnel(name, stages):
    tr, te = tiny_funnel(stages)
    spec = build_spec(_model(name), tr.vocab_sizes, tr.num_dense, tr.num_stages)
    records = []
    state, _ = train_model(
        spec, FAST, tr, desc=name, progress=False, on_log=lambda s, r: records.append(r)
    )
    assert records[-1]["loss"] < 0.9 * records[0]["loss"], (records[0], records[-1])
    cond, entire = _predict(spec, state.params, te)
    m = funnel_metrics(te.labels, cond, entire, te.stage_names)
    assert m["ctr"]["auc"] > 0.6, m


def test_conditional_families_keep_the_funnel_loss():
    spec = _tiny("mmoe")
    params = _init(spec, 1)
    batch = tiny_batch(32)
    logits = _forward(params, spec, batch)
    bce, constraint = task_losses(logits, batch["labels"], spec)
    np.testing.assert_array_equal(bce, entire_space_bce(logits, batch["labels"]))
    assert float(constraint) == 0.0


def test_aitm_outputs_are_entire_space():
    spec = _tiny("aitm", 3, aitm_constraint_weight=0.25)
    params = _init(spec)
    batch = tiny_batch(32, 3)
    logits = _forward(params, spec, batch)
    cond, entire = stage_probabilities(logits, spec)
    p = jax.nn.sigmoid(logits)
    np.testing.assert_allclose(entire, p, rtol=1e-6)
    want_cond = np.minimum(np.asarray(p) / np.concatenate([np.ones((32, 1)), p[:, :-1]], 1), 1)
    np.testing.assert_allclose(cond, want_cond, rtol=1e-5)
    y = batch["labels"]
    bce, constraint = task_losses(logits, y, spec)
    want = -np.mean(y * np.log(p) + (1 - y) * np.log1p(-p), axis=0)  # direct BCE per stage
    np.testing.assert_allclose(bce, want, rtol=1e-5)
    np.testing.assert_allclose(constraint, 0.25 * label_constraint(p), rtol=1e-6)
    # extreme logits: the conditional ratio stays finite and in [0, 1]
    cond, _ = stage_probabilities(jnp.array([[-1e4, -1e4, 50.0]]), spec)
    assert np.all(np.isfinite(cond)) and np.all((cond >= 0) & (cond <= 1))


@pytest.mark.slow
def test_aitm_calibrator_is_zero_in_order_and_penalises_violations():
    spec = _tiny("aitm", 3)  # default weight 0.6
    assert spec.model.aitm_constraint_weight == 0.6
    labels = jnp.zeros((2, 3))
    ordered = jnp.array([[2.0, 0.5, -1.0], [0.0, 0.0, -3.0]])  # p_t <= p_{t-1} everywhere
    assert float(task_losses(ordered, labels, spec)[1]) == 0.0
    violated = jnp.array([[-1.0, 1.0, -2.0], [0.0, -1.0, -3.0]])  # row 0: p_1 > p_0
    c = float(task_losses(violated, labels, spec)[1])
    p = jax.nn.sigmoid(violated)
    np.testing.assert_allclose(c, 0.6 * float(p[0, 1] - p[0, 0]) / 2, rtol=1e-6)
    g = jax.grad(lambda z: task_losses(z, labels, spec)[1])(violated)
    assert g[0, 1] > 0 and g[0, 0] < 0  # descent lowers p_1 and raises p_0
    assert float(jnp.abs(g[1]).max()) == 0.0 and float(g[0, 2]) == 0.0


def test_ait_attention_weights_sum_to_one():
    spec = _tiny("aitm", 2)
    towers = _init(spec)["towers"]
    items = jax.random.normal(jax.random.key(1), (5, 2, 8))
    z, w = ait_attention(towers["attention"], 0, items)
    assert z.shape == (5, 8) and w.shape == (5, 2)
    np.testing.assert_allclose(jnp.sum(w, axis=-1), 1.0, rtol=1e-6)


def test_mmoe_gate_weights_sum_to_one():
    spec = _tiny("mmoe", 3, num_experts=5)
    params = _init(spec)
    batch = tiny_batch(16, 3)
    w = mmoe_gate_weights(params["towers"], model_input(params, spec, batch))
    assert w.shape == (16, 3, 5) and np.all(w >= 0)
    np.testing.assert_allclose(jnp.sum(w, axis=-1), 1.0, rtol=1e-6)
    assert params["towers"]["experts"]["layer_0"]["kernel"].shape == (5, spec.input_dim, 12)


def test_ple_levels_and_experts_are_configurable():
    spec = _tiny("ple", 3, levels=3, task_experts=2, shared_experts=3)
    params = _init(spec)
    towers = params["towers"]
    for level in range(3):
        part = towers[f"level_{level}"]
        n_in = spec.input_dim if level == 0 else 8
        assert part["experts"]["layer_0"]["kernel"].shape == (3 * 2 + 3, n_in, 12)
        assert part["task_gates"]["kernel"].shape == (3, n_in, 2 + 3)
        assert ("shared_gate" in part) == (level < 2)  # the shared gate only at inner levels
    assert _forward(params, spec, tiny_batch(4, 3)).shape == (4, 3)


def test_family_spec_ignores_unrelated_fields():
    assert _tiny("mmoe", levels=5, bottom_hidden=(3,)) == _tiny("mmoe")
    assert _tiny("mmoe", num_experts=2) != _tiny("mmoe")
    assert _tiny("esmm", num_experts=2) == _tiny("esmm")


def test_random_masks_are_seeded_subsets_of_the_hierarchical_candidates():
    full = set(candidate_edges("hierarchical", 3, 2, "adjacent"))
    draws = {
        seed: _tiny("random_mask", 3, random_seed=seed, random_edge_prob=0.5).edges
        for seed in range(6)
    }
    for seed, edges in draws.items():
        assert set(edges) <= full and len(set(edges)) == len(edges)
        assert _tiny("random_mask", 3, random_seed=seed, random_edge_prob=0.5).edges == edges
    assert len(set(draws.values())) > 1  # the seed matters
    assert set(_tiny("random_mask", 3, random_edge_prob=1.0).edges) == full
    assert _tiny("random_mask", 3, random_edge_prob=0.0).edges == ()
    spec = _tiny("random_mask", 3)
    assert not spec.searched and not spec.has_arch and spec.model.family == "autoheri"


def test_config_families_match_the_implemented_ones():
    assert set(CONFIG_FAMILIES) == {"autoheri", *families.FAMILIES}
    assert set(FAMILIES) <= set(VARIANTS)


@pytest.mark.parametrize(
    ("kw", "named"),
    [
        ({"family": "moe"}, "family"),
        ({"family": "mmoe"}, "family"),  # a baseline family with the searched edge towers
        ({"num_experts": 0}, "num_experts"),
        ({"levels": 0}, "levels"),
        ({"shared_experts": 0}, "shared_experts"),
        ({"task_experts": 0}, "task_experts"),
        ({"expert_hidden": ()}, "expert_hidden"),
        ({"bottom_hidden": (8, 0)}, "bottom_hidden"),
        ({"tower_hidden": (-1,)}, "tower_hidden"),
        ({"aitm_constraint_weight": -0.1}, "aitm_constraint_weight"),
        ({"random_edge_prob": 1.5}, "random_edge_prob"),
        ({"random_seed": -1}, "random_seed"),
        ({"num_experts": 2.5}, "num_experts"),
    ],
)
def test_config_validation_names_the_key(kw, named):
    with pytest.raises(ConfigError, match=named):
        ModelConfig(**kw)


def test_overrides_and_experiment_flow_accept_every_baseline():
    names = [
        "esmm",
        "aitm",
        "mmoe",
        "ple",
        "shared_bottom",
        "random_mask",
        "dbmtl",
        "gmsl",
        "multi_dr",
        "escm2_ips",
        "escm2_dr",
        "dcmt",
        "esmm_stacked",
    ]
    cfg = apply_overrides(
        Config(), [f"baselines={','.join(names)}", "model.num_experts=3", "model.levels=1"]
    )
    with pytest.raises(ConfigError, match=r"model\.levels"):
        apply_overrides(Config(), ["model.levels=0"])
    record = ArchitectureRecord(
        search_mode="hierarchical",
        threshold=0.5,
        task_names=("ctr", "cvr"),
        candidates=(),
        kept=("0.0->1.1",),
    )
    models = model_configs(cfg, record)
    assert list(models) == ["autoheri", *names]
    assert models["aitm"].family == "aitm" and models["mmoe"].num_experts == 3
    assert models["random_mask"].edge_mode == "random" and models["autoheri"].family == "autoheri"
    for model in models.values():
        spec = build_spec(model, VOCABS, 2, 2)
        assert set(jax.eval_shape(lambda s=spec: init_params(jax.random.key(0), s))) <= {
            "embedding",
            "towers",
        }
