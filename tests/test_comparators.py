"""The paper's comparators (DBMTL, GMSL, ESM², Multi-DR) and the debiasing baselines (ESCM²
IPS/DR, DCMT): shapes, entire-space outputs, their losses on hand-computed rows, propensity
clipping, and a tiny convergence run each."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from autoheri_jax.config import ConfigError, ModelConfig, TrainConfig
from autoheri_jax.metrics import funnel_metrics
from autoheri_jax.model.build import build_spec
from autoheri_jax.model.families import family_task_loss as task_loss
from autoheri_jax.model.funnel_families import esm2_log_paths, gru_cell, log1mexp
from autoheri_jax.model.losses import stage_probabilities
from autoheri_jax.model.network import forward_outputs, init_params
from autoheri_jax.model.variants import VARIANTS
from autoheri_jax.train.fit import train_model
from autoheri_jax.train.optim import param_labels
from autoheri_jax.train.predict import make_predict_fn
from autoheri_jax.workdir_format import stamp
from tests.helpers import VOCABS, tiny_batch, tiny_funnel

NEW = ("dbmtl", "gmsl", "esm2", "multi_dr", "escm2_ips", "escm2_dr", "dcmt")
SMALL = {"embed_dim": 4, "hidden": (16, 8), "bottom_hidden": (16, 8), "tower_hidden": (8,)}
_OUTPUTS = jax.jit(forward_outputs, static_argnums=1)


def _spec(name: str, num_tasks: int = 2, **kw):
    model = VARIANTS[name](ModelConfig(**{**SMALL, **kw}))
    return build_spec(model, VOCABS, num_dense=2, num_tasks=num_tasks)


def _stages(name: str) -> list[int]:
    return [3] if name == "esm2" else [2, 3]


@pytest.mark.slow
@pytest.mark.parametrize("name", NEW)
def test_shapes_param_groups_and_entire_space_outputs(name):
    for num_tasks in _stages(name):
        spec = _spec(name, num_tasks)
        params = init_params(jax.random.key(0), spec)
        assert set(params) == {"embedding", "towers"} and spec.num_edges == 0
        assert set(jax.tree.leaves(param_labels(params)["towers"])) == {"weights"}
        logits, extras = _OUTPUTS(params, spec, tiny_batch(32, num_tasks))
        assert logits.shape == (32, num_tasks) and np.all(np.isfinite(logits))
        for key, value in extras.items():
            width = num_tasks if key == "conditional_logits" else num_tasks - 1
            assert value.shape == (32, width) and np.all(np.isfinite(value))
        cond, entire = (np.asarray(a) for a in stage_probabilities(logits, spec, extras))
        assert np.all((cond >= 0) & (cond <= 1) & (entire >= 0) & (entire <= 1))
        if name == "esm2":  # click bounds both branches; D-Action and buy are not ordered
            assert np.all(entire[:, 1:] <= entire[:, :1] * (1 + 1e-6))
            # the conditional rates are the heads y_1, y_2, y_3, and P_1 = y_1 y_2
            np.testing.assert_allclose(cond, jax.nn.sigmoid(extras["conditional_logits"]))
            np.testing.assert_allclose(entire[:, 1], cond[:, 0] * cond[:, 1], rtol=1e-5)
        else:  # every cumulative probability is non-increasing down the funnel
            assert np.all(np.diff(entire, axis=1) <= 1e-7)


def test_esm2_needs_three_stages_and_names_the_key():
    with pytest.raises(ConfigError, match=r"esm2.*3 stages.*data has 2"):
        _spec("esm2", 2)


def test_esm2_paths_match_the_decomposition():
    z = jnp.array([[0.3, -1.2, 2.0, -0.7], [-4.0, 0.0, 1.0, 3.0], [2.0, 2.0, -2.0, -9.0]])
    y = np.asarray(jax.nn.sigmoid(z), np.float64)
    want = np.stack(
        [y[:, 0], y[:, 0] * y[:, 1], y[:, 0] * (y[:, 1] * y[:, 2] + (1 - y[:, 1]) * y[:, 3])], 1
    )
    np.testing.assert_allclose(np.exp(esm2_log_paths(z)), want, rtol=1e-5)
    a = jnp.array([-1e-8, -0.1, -0.69, -0.7, -5.0, -80.0])
    np.testing.assert_allclose(log1mexp(a), np.log1p(-np.exp(np.asarray(a, np.float64))), 1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["dbmtl", "gmsl"])
def test_dbmtl_and_gmsl_pass_the_upstream_stage_downstream_only(name):
    spec = _spec(name, 3)
    params = init_params(jax.random.key(1), spec)
    batch = tiny_batch(8, 3)
    kernel = params["towers"]["tower"]["layer_0"]["kernel"]  # T x in x out: a tower per stage

    def stage_logit_sum(k, t):
        towers = {**params["towers"], "tower": {**params["towers"]["tower"]}}
        towers["tower"]["layer_0"] = {**towers["tower"]["layer_0"], "kernel": k}
        return jnp.sum(forward_outputs({**params, "towers": towers}, spec, batch)[0][:, t])

    def per_tower(t):  # |d logit_t / d tower-u weights| summed, per tower u
        return np.abs(np.asarray(jax.grad(stage_logit_sum)(kernel, t))).sum(axis=(1, 2))

    g0, g2 = per_tower(0), per_tower(2)
    assert g0[0] > 0 and g0[1] == 0 and g0[2] == 0, g0  # click reads nothing downstream
    assert np.all(g2 > 0), g2  # conversion reads every stage before it


def test_gru_cell_interpolates_between_state_and_candidate():
    d = 3
    gru = {"input": jnp.zeros((d, 3 * d)), "recurrent": jnp.zeros((d, 3 * d))}
    gru["bias"] = jnp.concatenate([jnp.full((d,), 50.0), jnp.zeros((2 * d,))])  # z = 1
    s = jnp.array([[0.1, -0.2, 0.3]])
    np.testing.assert_allclose(gru_cell(gru, jnp.ones((1, d)), s), s, atol=1e-6)
    gru["bias"] = jnp.concatenate([jnp.full((d,), -50.0), jnp.full((2 * d,), 0.5)])  # z = 0
    np.testing.assert_allclose(gru_cell(gru, jnp.ones((1, d)), s), np.tanh(0.5), rtol=1e-5)


# ---------------------------------------------------------------- losses on 4 hand-made rows

# pCTR 0.5, 0.25, 0.02 (clipped to 0.05), 0.8; pCVR 0.5, 0.2, 0.1, 0.5; clicked 1, 1, 1, 0;
# converted 1, 0, 0, 0.
P_CTR = [0.5, 0.25, 0.02, 0.8]
P_CVR = [0.5, 0.2, 0.1, 0.5]
LABELS = jnp.array([[1.0, 1.0], [1.0, 0.0], [1.0, 0.0], [0.0, 0.0]])


def _logit(p):
    return math.log(p / (1 - p))


LOGITS = jnp.array([[_logit(a), _logit(b)] for a, b in zip(P_CTR, P_CVR, strict=True)])
# per-row CVR BCE delta: -log 0.5, -log 0.8, -log 0.9, -log 0.5 (the last unobserved)
DELTA = [math.log(2), -math.log(0.8), -math.log(0.9), math.log(2)]
PROP = [0.5, 0.25, 0.05, 0.8]  # clip 0.05
IMPUTED = [0.6, 0.1, 0.3, 0.4]


def _bce(y, p):
    return -(y * math.log(p) + (1 - y) * math.log(1 - p))


def _esmm_terms():
    ctr = sum(_bce(y, p) for y, p in zip([1, 1, 1, 0], P_CTR, strict=True)) / 4
    ctcvr_p = [a * b for a, b in zip(P_CTR, P_CVR, strict=True)]
    ctcvr = sum(_bce(y, p) for y, p in zip([1, 0, 0, 0], ctcvr_p, strict=True)) / 4
    return ctr, ctcvr


def _loss(name, extras=None, **kw):
    spec = _spec(name, **kw)
    return task_loss(LOGITS, extras or {}, LABELS, spec)


def test_ips_loss_matches_hand_computation_with_the_clip():
    ips = (DELTA[0] / 0.5 + DELTA[1] / 0.25 + DELTA[2] / 0.05) / 4  # row 3 unclicked: 0
    ctr, ctcvr = _esmm_terms()
    total, terms = _loss("escm2_ips")
    np.testing.assert_allclose(float(terms["debias"]), 0.5 * ips, rtol=1e-5)
    np.testing.assert_allclose(float(total), ctr + 0.5 * ctcvr + 0.5 * ips, rtol=1e-5)
    # a larger clip lifts row 2's propensity from 0.05 to 0.1 (and no other row's)
    _, clipped = _loss("escm2_ips", propensity_clip=0.1)
    ips_01 = (DELTA[0] / 0.5 + DELTA[1] / 0.25 + DELTA[2] / 0.1) / 4
    np.testing.assert_allclose(float(clipped["debias"]), 0.5 * ips_01, rtol=1e-5)


def test_dr_losses_match_hand_computation():
    o = [1, 1, 1, 0]
    dr = sum(e + oi * (d - e) / p for e, oi, d, p in zip(IMPUTED, o, DELTA, PROP, strict=True))
    imp = sum(oi * (d - e) ** 2 / p for e, oi, d, p in zip(IMPUTED, o, DELTA, PROP, strict=True))
    dr, imp = dr / 4, imp / 4
    extras = {"imputed_error": jnp.array(IMPUTED)[:, None]}
    ctr, ctcvr = _esmm_terms()
    total, terms = _loss("multi_dr", extras, imputation_weight=2.0)
    np.testing.assert_allclose(float(terms["debias"]), dr + 2.0 * imp, rtol=1e-5)
    np.testing.assert_allclose(float(total), ctr + dr + 2.0 * imp, rtol=1e-5)  # no CTCVR
    total, terms = _loss("escm2_dr", extras, escm2_counterfactual_weight=0.3)
    np.testing.assert_allclose(float(terms["debias"]), 0.3 * (dr + imp), rtol=1e-5)
    np.testing.assert_allclose(float(total), ctr + 0.5 * ctcvr + 0.3 * (dr + imp), rtol=1e-5)


def test_dcmt_loss_matches_hand_computation():
    cf = [0.4, 0.7, 0.95, 0.6]  # counterfactual head r*_hat
    o, r = [1, 1, 1, 0], [1, 0, 0, 0]
    factual = sum(oi * _bce(ri, q) / p for oi, ri, q, p in zip(o, r, P_CVR, PROP, strict=True))
    counter = sum(
        (1 - oi) * _bce(1 - ri, c) / (1 - p) for oi, ri, c, p in zip(o, r, cf, PROP, strict=True)
    )
    constraint = sum(abs(1 - (q + c)) for q, c in zip(P_CVR, cf, strict=True))
    want = (factual + counter + 0.01 * constraint) / 4
    extras = {"counterfactual_logits": jnp.array([_logit(c) for c in cf])[:, None]}
    ctr, ctcvr = _esmm_terms()
    total, terms = _loss("dcmt", extras, dcmt_constraint_weight=0.01)
    np.testing.assert_allclose(float(terms["debias"]), want, rtol=1e-5)
    np.testing.assert_allclose(float(total), ctr + ctcvr + want, rtol=1e-5)
    # the clip also bounds 1 / (1 - o_hat): pCTR 0.99 on an unclicked row weighs 1 / 0.05
    high = LOGITS.at[3, 0].set(_logit(0.99))
    _, t = task_loss(high, extras, LABELS, _spec("dcmt", dcmt_constraint_weight=0.0))
    bce_cf = _bce(1, cf[3])
    np.testing.assert_allclose(float(t["debias"]), (factual + bce_cf / 0.05) / 4, rtol=1e-5)


def test_dr_terms_each_train_their_own_model():
    """DR-JL: the DR risk has no gradient into the imputed error, the imputation loss none into
    the prediction."""
    from autoheri_jax.model.objectives import dr_risk, imputation_loss

    delta, imputed = jnp.array([0.7, 0.2, 0.1]), jnp.array([0.3, 0.3, 0.3])
    o, p = jnp.array([1.0, 0.0, 1.0]), jnp.array([0.5, 0.5, 0.2])
    g_imp = jax.grad(lambda e: dr_risk(delta, o, p, e))(imputed)
    g_delta = jax.grad(lambda d: imputation_loss(d, o, p, imputed))(delta)
    assert float(jnp.abs(g_imp).max()) == 0.0 and float(jnp.abs(g_delta).max()) == 0.0
    np.testing.assert_allclose(
        jax.grad(lambda d: dr_risk(d, o, p, imputed))(delta),
        np.array([1 / 0.5, 0, 1 / 0.2]) / 3,
        rtol=1e-6,
    )
    want = 2 * np.array([1 * (0.3 - 0.7) / 0.5, 0, 1 * (0.3 - 0.1) / 0.2]) / 3
    got = jax.grad(lambda e: imputation_loss(delta, o, p, e))(imputed)
    np.testing.assert_allclose(got, want, rtol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["multi_dr", "escm2_ips", "escm2_dr", "dcmt"])
def test_the_counterfactual_risk_does_not_move_the_propensity(name):
    """The propensity is the model's own pCTR without gradient: the debiasing term's gradient
    with respect to the CTR logit is exactly 0."""
    spec = _spec(name)
    extras = {"imputed_error": jnp.array(IMPUTED)[:, None]} if "dr" in name else {}
    if name == "dcmt":
        extras = {"counterfactual_logits": jnp.zeros((4, 1))}
    grad = jax.grad(lambda z: task_loss(z, extras, LABELS, spec)[1]["debias"])(LOGITS)
    assert float(jnp.abs(grad[:, 0]).max()) == 0.0
    assert float(jnp.abs(grad[:3, 1]).max()) > 0  # clicked rows move pCVR


def test_debias_config_fields_are_validated_and_reach_the_spec():
    for kw, key in [
        ({"propensity_clip": 0.0}, "propensity_clip"),
        ({"propensity_clip": 0.5}, "propensity_clip"),
        ({"escm2_counterfactual_weight": -1.0}, "escm2_counterfactual_weight"),
        ({"dcmt_constraint_weight": -0.1}, "dcmt_constraint_weight"),
        ({"imputation_weight": "1"}, "imputation_weight"),
    ]:
        with pytest.raises(ConfigError, match=key):
            ModelConfig(**kw)
    assert _spec("escm2_ips", propensity_clip=0.2).model.propensity_clip == 0.2
    # a family's spec ignores the fields it does not read (its jit key and fingerprint)
    assert _spec("gmsl", propensity_clip=0.2) == _spec("gmsl")
    assert _spec("dcmt", escm2_ctcvr_weight=0.1) == _spec("dcmt")


# ---------------------------------------------------------------- tiny convergence


@pytest.mark.parametrize("name", NEW)
def test_comparator_learns_the_funnel(name):
    stages = 3 if name == "esm2" else 2
    tr, te = tiny_funnel(stages)
    spec = build_spec(
        VARIANTS[name](ModelConfig(**SMALL)), tr.vocab_sizes, tr.num_dense, tr.num_stages
    )
    cfg = TrainConfig(epochs=2, batch_size=128, lr=1e-2, log_every=8)
    records = []
    state, _ = train_model(
        spec, cfg, tr, desc=name, progress=False, on_log=lambda s, r: records.append(r)
    )
    first, last = sum(records[0]["stage_bce"]), sum(records[-1]["stage_bce"])
    assert last < 0.9 * first, (records[0], records[-1])
    batch = te.batch(np.arange(te.num_rows))
    batch.pop("labels")
    cond, entire = jax.device_get(make_predict_fn(spec)(state.params, batch))
    m = funnel_metrics(te.labels, cond, entire, te.stage_names)
    assert m["ctr"]["auc"] > 0.6 and m["ctcvr"]["auc"] > 0.6, m


# ---------------------------------------------------------------- the ranking script


def _results(values: dict[str, tuple[float, float]]) -> dict:
    """A minimal results.json: per model (cvr.soft_auc_all, cvr.mae_true_all)."""
    gap = {"pred_scored": 0.03, "pred_all": 0.02, "gap": -0.01, "true_all": 0.01, "bias_all": 0.01}
    test = lambda a, m: {
        "cvr": {"auc": a, "soft_auc_all": a, "mae_true_all": m, "rows": 1, "selection_gap": gap}
    }
    return {
        "metric_keys": ["cvr"],
        "models": {name: {"test": test(a, m)} for name, (a, m) in values.items()},
        "architecture": {"kept": []},
    }


def test_rank_families_ranks_pairs_and_states_what_the_ci_supports(repo, tmp_path, capsys):
    import json

    from tests.helpers import load_script

    module = load_script(repo / "experiments" / "rank_families.py")
    seeds = [  # good: always 0.02 above esmm with a lower error; tie: noise around esmm
        {"esmm": (0.70, 0.010), "good": (0.72, 0.008), "tie": (0.701, 0.010)},
        {"esmm": (0.65, 0.012), "good": (0.67, 0.010), "tie": (0.649, 0.012)},
        {"esmm": (0.68, 0.011), "good": (0.70, 0.009), "tie": (0.682, 0.011)},
    ]
    for k, values in enumerate(seeds):
        d = tmp_path / "transfer" / f"dseed{k}"
        d.mkdir(parents=True)
        (d / "results.json").write_text(json.dumps(stamp(_results(values))))
    assert module.lower_is_better("cvr.mae_true_all") and not module.lower_is_better("cvr")
    assert module.main([str(tmp_path), "--columns", "cvr.soft_auc_all,cvr.mae_true_all"]) == 0
    out = capsys.readouterr().out
    auc_rows = out.split("**cvr.mae_true_all**")[0]
    good = next(line for line in auc_rows.splitlines() if line.startswith("| good "))
    assert "| 1.0 |" in good and "+0.0200 [" in good and "| above |" in good
    tie = next(line for line in auc_rows.splitlines() if line.startswith("| tie "))
    assert "| n.s. |" in tie
    mae_rows = out.split("**cvr.mae_true_all**")[1]
    good = next(line for line in mae_rows.splitlines() if line.startswith("| good "))
    assert "| 1.0 |" in good and "| above |" in good  # lower error: better, "above"
    assert module.main([str(tmp_path), "--columns", "cvr", "--gaps"]) == 0
    gaps = capsys.readouterr().out.split("selection gap")[1]
    assert "| good | 0.0300 | 0.0200 | -0.0100 | 0.0100 | 0.0100 |" in gaps
    ranks = module.mean_ranks({"a": [1.0, 2.0], "b": [1.0, 3.0]}, lower=False)
    assert ranks == {"a": 1.75, "b": 1.25}  # seed 0 tied (1.5 each), seed 1: b first


def test_esmm_stacked_trains_esmms_loss_on_the_debiasing_towers():
    """The control: escm2_ips's towers with exactly ESMM's objective (no counterfactual term)."""
    spec = _spec("esmm_stacked")
    assert spec.model.family == "escm2_ips" and spec.model.escm2_counterfactual_weight == 0.0
    total, terms = task_loss(LOGITS, {}, LABELS, spec)
    ctr, ctcvr = _esmm_terms()
    np.testing.assert_allclose(float(total), ctr + ctcvr, rtol=1e-6)
    assert float(terms["debias"]) == 0.0


def test_esm2_on_a_two_stage_simulator_is_refused_before_compute():
    from autoheri_jax.config import Config, apply_overrides

    with pytest.raises(ConfigError, match=r"baselines: esm2 needs a 3-stage funnel"):
        apply_overrides(Config(), ["baselines=esmm,esm2"])
    cfg = apply_overrides(
        Config(), ["baselines=esmm,esm2", "data.num_stages=3", "data.stage_rates=[0.3,0.3]"]
    )
    assert cfg.baselines == ("esmm", "esm2")
