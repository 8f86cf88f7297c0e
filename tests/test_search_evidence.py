"""The search waits for evidence: arch warm-up, edge initialisation, the sparsity cost, and the
low-noise instrument (soft-label AUC, excess log-loss) the studies measure it with."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from autoheri_jax.metrics import BinaryScores, auc, excess_nll, funnel_metrics, soft_auc
from autoheri_jax.model.edges import candidate_edges
from autoheri_jax.model.gates import edge_cost, edge_entropy, entropy_weight_at
from autoheri_jax.model.network import forward, init_params
from autoheri_jax.model.variants import matched_random_edges
from autoheri_jax.train.optim import make_optimizer
from autoheri_jax.train.step import init_keys, init_state, make_update_fn
from tests.helpers import gated, tiny_batch, tiny_spec

# ------------------------------------------------------------------------- the instrument


def test_soft_auc_is_exact_on_a_hand_computed_case():
    # pairs i != j weigh p_i (1 - p_j): wins .4 + .8 + .5/2 + .56 + .35 = 2.36 out of 3.22
    s = np.array([0.1, 0.4, 0.4, 0.9])
    p = np.array([0.2, 0.5, 1.0, 0.7])
    assert soft_auc(s, p) == pytest.approx(2.36 / 3.22, abs=1e-12)
    # hard labels: the ordinary tie-aware AUC
    y = np.array([0.0, 1.0, 0.0, 1.0])
    assert soft_auc(s, y) == pytest.approx(auc(BinaryScores(s, y)), abs=1e-12)
    assert soft_auc(s, np.zeros(4)) is None  # no positive mass: undefined, never 0.5


def test_soft_auc_is_the_sampled_auc_in_the_limit_of_many_draws():
    rng = np.random.default_rng(0)
    p = rng.beta(1.0, 4.0, 4000)
    s = np.round(p + 0.2 * rng.standard_normal(4000), 2)  # noisy scores with ties
    sampled = [auc(BinaryScores(s, rng.random(4000) < p)) for _ in range(400)]
    assert np.mean(sampled) == pytest.approx(soft_auc(s, p), abs=1.5e-3)
    assert np.std(sampled) > 5e-3  # one draw's noise, which the soft AUC does not carry


def test_excess_nll_is_the_kl_from_the_truth():
    p, q = np.array([0.1, 0.6]), np.array([0.2, 0.6])
    kl = 0.1 * np.log(0.1 / 0.2) + 0.9 * np.log(0.9 / 0.8)
    assert excess_nll(q, p) == pytest.approx(kl / 2, rel=1e-9)
    assert excess_nll(p, p) == pytest.approx(0.0, abs=1e-15)


def test_funnel_metrics_score_cvr_against_the_truth_on_every_impression():
    labels = np.array([[1, 1], [1, 0], [0, 0], [0, 0]], np.float32)
    truth = np.array([[0.9, 0.6], [0.7, 0.2], [0.1, 0.8], [0.2, 0.1]])
    pred = np.array([[0.8, 0.5], [0.6, 0.3], [0.2, 0.7], [0.1, 0.2]])
    entire = np.cumprod(pred, axis=1)
    m = funnel_metrics(labels, pred, entire, ("click", "conversion"), truth)
    assert m["cvr"]["soft_auc"] == pytest.approx(soft_auc(pred[:2, 1], truth[:2, 1]))
    assert m["cvr"]["soft_auc_all"] == pytest.approx(soft_auc(pred[:, 1], truth[:, 1]))
    assert m["cvr"]["excess_nll_all"] == pytest.approx(excess_nll(pred[:, 1], truth[:, 1]))
    assert m["ctcvr"]["soft_auc"] == pytest.approx(soft_auc(entire[:, 1], truth.prod(1)))
    assert "soft_auc_all" not in m["ctr"] and "soft_auc_all" not in m["ctcvr"]
    assert "soft_auc" not in funnel_metrics(labels, pred, entire, ("click", "conversion"))["cvr"]


# ---------------------------------------------------------------------- the search's parts


def test_arch_warmup_freezes_arch_params_bitwise_then_releases_them():
    spec = tiny_spec(edge_mode="hierarchical")
    cfg = gated(arch_warmup_steps=3, arch_lr=0.3, entropy_weight=0.5, sparsity_weight=0.2)
    opt = make_optimizer(cfg)
    state = init_state(spec, cfg, opt)
    start = np.asarray(state.params["arch"]["edge_logits"]).copy()
    towers = np.asarray(state.params["towers"]["task_1"]["layer_1"]["kernel"]).copy()
    update = make_update_fn(spec, cfg, opt)
    for step in range(3):
        state, _ = update(state, tiny_batch(16, seed=step))
        np.testing.assert_array_equal(np.asarray(state.params["arch"]["edge_logits"]), start)
    assert not np.array_equal(state.params["towers"]["task_1"]["layer_1"]["kernel"], towers)
    state, _ = update(state, tiny_batch(16, seed=3))
    assert not np.array_equal(np.asarray(state.params["arch"]["edge_logits"]), start)
    # the entropy weight ramps in from the end of the warm-up
    assert float(entropy_weight_at(jnp.int32(2), 0.4, 10, 3)) == 0.0
    assert float(entropy_weight_at(jnp.int32(8), 0.4, 10, 3)) == pytest.approx(0.2)
    assert float(entropy_weight_at(jnp.int32(3), 0.4, 0, 3)) == pytest.approx(0.4)


def _layer_input_std(edge_init: str, mode: str) -> float:
    spec = tiny_spec(edge_mode=mode, searched=False, edge_init=edge_init, hidden=(32, 32, 32))
    params = init_params(jax.random.key(0), spec)
    # the conversion tower's last layer input scale shows in its head's logit
    return float(jnp.std(forward(params, spec, tiny_batch(512))[:, 1]))


def test_zero_edge_init_keeps_the_layer_input_scale_of_a_tower_without_edges():
    alone = _layer_input_std("zero", "none")
    assert _layer_input_std("zero", "hierarchical") == pytest.approx(alone, rel=0.05)
    # the per-block Glorot init this replaces grows it with every incoming edge
    assert _layer_input_std("block", "hierarchical") > 1.5 * alone


def test_edge_entropy_and_cost_are_per_edge_sums():
    z = jnp.array([0.0, 2.0, -1.0])
    assert float(edge_entropy(jnp.tile(z, 3))) == pytest.approx(3 * float(edge_entropy(z)))
    assert float(edge_cost(z)) == pytest.approx(float(jnp.sum(jax.nn.sigmoid(z))))
    assert float(edge_cost(None)) == 0.0


def _gated_linear_search(sparsity_weight: float, seed: int = 0, rule: str = "adam") -> np.ndarray:
    """A tiny search: logit = sum_k gate_k x_k w_k + b over 6 candidate inputs, of which only
    x_0 carries the label's signal; trained with the project's optimiser partitions and
    regularisers. Returns the final gate probabilities."""
    rng = np.random.default_rng(seed)
    n, k = 4096, 6
    x = rng.standard_normal((n, k)).astype(np.float32)
    y = (rng.random(n) < 1 / (1 + np.exp(-2.0 * x[:, 0]))).astype(np.float32)
    x, y = jnp.asarray(x), jnp.asarray(y)
    cfg = gated(
        lr=0.03,
        arch_lr=0.05,
        arch_warmup_steps=50,
        arch_optimizer=rule,
        entropy_weight=0.02,
        sparsity_weight=sparsity_weight,
    )
    params = {
        "towers": {"w": jnp.zeros(k), "b": jnp.zeros(())},
        "arch": {"edge_logits": jnp.zeros(k)},
    }
    opt = make_optimizer(cfg)
    opt_state = opt.init(params)

    def loss(p, xb, yb, step):
        g = jax.nn.sigmoid(p["arch"]["edge_logits"])
        z = xb @ (g * p["towers"]["w"]) + p["towers"]["b"]
        bce = jnp.mean(optax.sigmoid_binary_cross_entropy(z, yb))
        ent = entropy_weight_at(step, cfg.arch.entropy_weight, 100, cfg.arch.arch_warmup_steps)
        logits = p["arch"]["edge_logits"]
        return bce + ent * edge_entropy(logits) + cfg.arch.sparsity_weight * edge_cost(logits)

    @jax.jit
    def step_fn(p, s, step):
        idx = jax.random.choice(jax.random.fold_in(jax.random.key(seed), step), n, (256,))
        g = jax.grad(loss)(p, x[idx], y[idx], step)
        updates, s = opt.update(g, s, p)
        return optax.apply_updates(p, updates), s

    for step in range(600):
        params, opt_state = step_fn(params, opt_state, jnp.int32(step))
    return np.asarray(jax.nn.sigmoid(params["arch"]["edge_logits"]))


@pytest.mark.parametrize("rule", ["adam", "shared_adam"])
def test_sparsity_cost_closes_the_edges_that_carry_no_signal(rule):
    kept = _gated_linear_search(sparsity_weight=0.01, rule=rule) > 0.5
    assert kept[0] and not kept[1:].any()


def test_without_the_cost_per_parameter_adam_keeps_noise_edges_by_chance():
    assert (_gated_linear_search(sparsity_weight=0.0, rule="adam")[1:] > 0.5).any()


def test_matched_random_mask_has_the_searched_edge_count():
    candidates = candidate_edges("hierarchical", 2, 3, "adjacent")
    a = matched_random_edges(candidates, 4, seed=1)
    assert len(a) == 4 and set(a) <= set(candidates)
    assert a == matched_random_edges(candidates, 4, seed=1)
    assert any(matched_random_edges(candidates, 4, seed=s) != a for s in range(2, 6))
    assert matched_random_edges(candidates, 0, seed=1) == ()
    with pytest.raises(ValueError, match="cannot draw 10 of 9"):
        matched_random_edges(candidates, 10, seed=1)


def test_shared_rms_arch_steps_keep_relative_evidence_and_ignore_overall_scale():
    from autoheri_jax.train.optim import scale_by_shared_rms

    rule = scale_by_shared_rms()
    params = {"edge_logits": jnp.zeros(3)}

    def steps(grad):
        state, out = rule.init(params), None
        for _ in range(5):
            out, state = rule.update({"edge_logits": grad}, state)
        return np.asarray(out["edge_logits"])

    g = jnp.array([1e-5, 2e-5, -4e-5])
    small = steps(g)
    np.testing.assert_allclose(small / small[0], [1.0, 2.0, -4.0], rtol=1e-5)
    np.testing.assert_allclose(steps(1000.0 * g), small, rtol=1e-4)  # scale-free
    # per-parameter Adam erases the evidence: every edge moves alike
    adam = optax.scale_by_adam()
    state = adam.init(params)
    out, _ = adam.update({"edge_logits": g}, state)
    np.testing.assert_allclose(np.abs(np.asarray(out["edge_logits"])), 1.0, rtol=2e-3)


def test_edge_logit_noise_draws_fresh_starting_points_per_seed():
    spec = tiny_spec(edge_mode="hierarchical")
    quiet = lambda seed: init_params(jax.random.key(seed), spec)
    noisy = lambda seed: init_params(jax.random.key(seed), spec, edge_logit_noise=0.5)
    start = lambda params: np.asarray(params["arch"]["edge_logits"])
    np.testing.assert_array_equal(start(quiet(0)), np.zeros(9))
    a, b = start(noisy(0)), start(noisy(1))
    assert 0.2 < a.std() < 1.0 and not np.array_equal(a, b)
    np.testing.assert_array_equal(a, start(noisy(0)))
    # the weights are drawn as without noise: only the arch logits move
    jax.tree.map(np.testing.assert_array_equal, quiet(0)["towers"], noisy(0)["towers"])
    # the trainer draws them from the gradient search's settings (GradientSearch)
    cfg = gated(edge_logit_noise=0.5)
    state = init_state(spec, cfg, make_optimizer(cfg))
    want = init_params(init_keys(0)[0], spec, edge_logit_noise=0.5)
    np.testing.assert_array_equal(start(state.params), start(want))


def test_study_columns_carry_ci_and_mde_and_the_report_plots_only_aucs(tmp_path):
    from autoheri_jax.report.inputs import normalize_study
    from autoheri_jax.report.tables import column_label
    from autoheri_jax.study import mean_pairwise_jaccard, paired_test

    t = paired_test([0.71, 0.72, 0.70, 0.74, 0.73], [0.70, 0.70, 0.69, 0.71, 0.71])
    assert t["ci_lo"] < t["mean_diff"] < t["ci_hi"] and t["ci_lo"] > 0  # a clear gain
    half = t["ci_hi"] - t["mean_diff"]
    assert half == pytest.approx(2.7764451 * t["std_diff"] / np.sqrt(5), rel=1e-6)
    assert t["mde"] == pytest.approx((2.7764451 + 0.9409646) * t["std_diff"] / np.sqrt(5), 1e-6)
    assert mean_pairwise_jaccard([["a", "b"], ["a", "b"], ["a"]]) == pytest.approx(2 / 3)
    assert mean_pairwise_jaccard([[], []]) == 1.0 and mean_pairwise_jaccard([["a"]]) is None
    assert column_label("cvr") == "cvr AUC"
    assert column_label("cvr.soft_auc_all") == "cvr soft AUC (all)"
    raw = {
        "keys": ["cvr", "cvr.soft_auc", "cvr.excess_nll_all"],
        "arms": {"a": {"m": {"cvr": {"mean": 0.7, "std": 0.01}}}},
    }
    assert normalize_study(raw, tmp_path / "study.json")["keys"] == ["cvr", "cvr.soft_auc"]


@pytest.mark.slow
def test_gate_evidence_script_reports_a_z_per_candidate_edge(repo):
    from tests.helpers import load_script

    module = load_script(repo / "experiments" / "gate_evidence.py")
    small = ["data.num_train=20000", "data.num_valid=8192", "data.num_test=1000"]
    out = module.world(0.95, 0, small, batches=8)
    for rule in ("masked_raw", "masked_shift", "masked_recal", "masked_recal_cvr"):
        assert len(out[rule]["z"]) == 9 and all(np.isfinite(out[rule]["z"]))
    for part in ("before", "after"):
        assert len(out["gradient"][part]["z"]) == 9
    summary = module.summarize([out])
    assert summary["0.95"]["gradient.before"]["worlds"] == 1
