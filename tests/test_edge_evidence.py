"""The masked search's decision rule (search/evidence.py): paired on/off contrasts, the
per-mask recalibration and the common-mode report, on planted logits and a trained supernet."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from autoheri_jax.config import ConfigError, MaskedSearch, ModelConfig, SupernetConfig, TrainConfig
from autoheri_jax.model.build import build_spec
from autoheri_jax.model.edges import incoming
from autoheri_jax.search import evidence
from autoheri_jax.search.records import Comparison, ScoredCandidate, Selection
from autoheri_jax.search.selection import detectable_difference
from autoheri_jax.train.fit import train_model
from autoheri_jax.train.step import step_edge_mask
from tests.helpers import tiny_funnel


def _planted(num_batches=12, rows=400, edges=3, seed=0):
    """Off logits of a 2-stage funnel, labels drawn from them, and U = 1 + E masks: the
    context (all off) and each edge switched on alone."""
    rng = np.random.default_rng(seed)
    base = np.stack(
        [rng.normal(-1.5, 1, (num_batches, rows)), rng.normal(-1.0, 1.2, (num_batches, rows))], -1
    )
    p = 1 / (1 + np.exp(-base))
    click = rng.random(p[..., 0].shape) < p[..., 0]
    conv = click & (rng.random(click.shape) < p[..., 1])
    labels = np.stack([click, conv], -1).astype(np.float32)
    pairs = np.array([[[0, 1 + k] for k in range(edges)]])  # one context: (off, on) per edge
    return base.astype(np.float32), labels, pairs


def _with_masks(base, shifts):
    """[nb, 1 + E, B, T]: mask 0 = base; mask 1 + k = base with the stage-1 logit moved."""
    out = [base]
    for s in shifts:
        moved = base.copy()
        moved[..., 1] = moved[..., 1] + s  # s: a scalar (pure intercept) or per-row array
        out.append(moved)
    return np.stack(out, axis=1)


def test_pure_intercept_shift_is_the_whole_raw_contrast_and_the_refit_removes_it():
    base, labels, pairs = _planted()
    logits = _with_masks(base, [0.4, -0.3, 0.8])
    d = evidence.contrasts_from_logits(logits, labels, pairs)
    # every raw difference is the intercept shift's: correlation 1, nothing left over
    cm = evidence.common_mode(d["raw_nll"], d["intercept"])
    assert cm.intercept_corr == pytest.approx(1.0, abs=1e-9)
    np.testing.assert_allclose(d["shift_nll"], 0.0, atol=1e-6)
    assert np.abs(d["raw_nll"]).mean() > 1e-3  # the shifts did move the raw loss
    # the per-mask refit absorbs a pure intercept difference exactly (up to float rounding)
    np.testing.assert_allclose(d["recal_nll"], 0.0, atol=2e-6)
    np.testing.assert_allclose(d["recal_cvr_nll"], 0.0, atol=2e-6)


def test_informative_edge_survives_the_refit():
    """An 'on' logit that moves toward the truth row by row (not by a constant) keeps a
    positive recalibrated contrast: the correction removes calibration, not information."""
    rng = np.random.default_rng(1)
    nb, rows = 16, 500
    truth = rng.normal(-1.0, 1.5, (nb, rows))
    off = truth + rng.normal(0, 1.5, truth.shape)  # a noisy ranking
    on = 0.5 * (off + truth)  # closer to the truth
    click_logit = rng.normal(-1.0, 1, truth.shape)
    click = rng.random(truth.shape) < 1 / (1 + np.exp(-click_logit))
    conv = click & (rng.random(truth.shape) < 1 / (1 + np.exp(-truth)))
    labels = np.stack([click, conv], -1).astype(np.float32)
    logits = np.stack([np.stack([click_logit, off], -1), np.stack([click_logit, on], -1)], 1)
    d = evidence.contrasts_from_logits(logits.astype(np.float32), labels, np.array([[[0, 1]]]))
    z = evidence.z_scores(d["recal_nll"])["z"]
    assert z[0] > 3


def test_platt_fit_recovers_a_known_map():
    rng = np.random.default_rng(2)
    z = rng.normal(0, 2, 200_000).astype(np.float32)
    y = (rng.random(z.shape) < 1 / (1 + np.exp(-(0.7 - 0.5 * z)))).astype(np.float32)
    a, b = np.asarray(evidence.platt_fit(jnp.asarray(z), jnp.asarray(y), jnp.ones_like(z)))
    assert a == pytest.approx(0.7, abs=0.03) and b == pytest.approx(-0.5, abs=0.03)


@pytest.mark.parametrize("clicked", [37, 1024, 2500])  # under, at and between the row bucket
def test_recalibration_fits_each_stage_on_the_rows_that_reached_its_parent(clicked):
    """fit_recalibration hands a post-click stage only the clicked rows; the fit must equal
    the weighted fit over every row (the weight-0 rows add nothing), mask by mask."""
    rng = np.random.default_rng(clicked)
    n, m = 6000, 3
    labels = np.zeros((n, 3), np.float32)
    labels[rng.choice(n, clicked, replace=False), 0] = 1
    labels[:, 1] = labels[:, 0] * (rng.random(n) < 0.4)
    labels[:, 2] = labels[:, 1] * (rng.random(n) < 0.5)
    logits = rng.normal(-1, 1.5, (m, n, 3)).astype(np.float32)
    got = np.asarray(evidence.fit_recalibration(jnp.asarray(logits), labels))
    full = jax.vmap(evidence.platt_fit, in_axes=(0, None, None))
    for t in (1, 2):
        want = full(jnp.asarray(logits[:, :, t]), labels[:, t], labels[:, t - 1])
        np.testing.assert_allclose(got[:, t], np.asarray(want), rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(got[:, 0], np.tile([0.0, 1.0], (m, 1)))
    # the fits differ between masks, so a mix-up of masks and rows would show
    assert np.ptp(got[:, 1, 1]) > 1e-3


@pytest.mark.parametrize("seed", range(5))
def test_contrast_masks_pair_each_edge_on_and_off_in_each_context(seed):
    m = evidence.contrast_masks(num_edges=5, contexts=3, keep_prob=0.5, seed=seed)
    assert m.shape == (3, 5, 2, 5)
    for c in range(3):
        for k in range(5):
            off, on = m[c, k]
            assert off[k] == 0 and on[k] == 1
            others = np.arange(5) != k
            np.testing.assert_array_equal(off[others], on[others])  # only edge k switches
            for j in range(5):  # every edge of context c is switched in the same context
                both = (np.arange(5) != k) & (np.arange(5) != j)
                np.testing.assert_array_equal(off[both], m[c, j, 0][both])
    np.testing.assert_array_equal(m, evidence.contrast_masks(5, 3, 0.5, seed))  # deterministic


def test_the_threshold_is_a_bonferroni_t_quantile():
    from scipy import stats

    assert evidence.t_threshold(19, 27) == pytest.approx(3.3327, abs=1e-3)
    assert evidence.t_threshold(97, 9) == pytest.approx(stats.t.ppf(1 - 0.05 / 9, 96))
    assert evidence.t_threshold(8, 9) > evidence.t_threshold(97, 9)  # fewer batches, wider


def test_decision_rule_and_undecided_edges():
    decisions, kept = evidence.decide(np.array([3.5, -4.0, 1.0, 3.0]), 3.0, "drop")
    assert decisions == ["kept", "dropped", "undecided", "undecided"]
    assert kept.tolist() == [True, False, False, False]
    _, kept = evidence.decide(np.array([3.5, -4.0, 1.0]), 3.0, "keep")
    assert kept.tolist() == [True, False, True]


def test_edge_search_config_is_validated():
    with pytest.raises(ConfigError, match="criterion"):
        MaskedSearch(criterion="auc")
    with pytest.raises(ConfigError, match="keep_prob"):
        MaskedSearch(keep_prob=1.0)


def test_step_mask_is_one_draw_per_step_from_the_step_key():
    spec = build_spec(ModelConfig(embed_dim=4, hidden=(8, 6, 5)), (7, 5), 0, 2)
    cfg = SupernetConfig(edge_keep_prob=0.5)
    keys = [jax.random.fold_in(jax.random.key(0), s) for s in range(200)]
    draws = np.stack([np.asarray(step_edge_mask(spec, cfg, k)) for k in keys])
    assert draws.shape == (200, spec.num_edges) and set(np.unique(draws)) == {0.0, 1.0}
    assert abs(draws.mean() - 0.5) < 0.05 and len({tuple(d) for d in draws}) > 100
    np.testing.assert_array_equal(draws[7], np.asarray(step_edge_mask(spec, cfg, keys[7])))
    assert step_edge_mask(spec, TrainConfig(), keys[0]) is None  # 0 = the spec's own gates


@pytest.fixture(scope="module")
def supernet():
    """A supernet trained under Bernoulli(0.5) masks on a small funnel, and its valid rows."""
    train_rows, valid = tiny_funnel()
    model = ModelConfig(embed_dim=4, hidden=(8, 6))
    spec = build_spec(model, train_rows.vocab_sizes, train_rows.num_dense, 2)
    cfg = SupernetConfig(epochs=2, batch_size=128, lr=1e-2, edge_keep_prob=0.5, log_every=10)
    state, _ = train_model(spec, cfg, train_rows, desc="supernet", progress=False)
    return spec, state.params, valid


def test_an_edge_whose_block_is_zero_has_a_contrast_of_exactly_zero(supernet):
    spec, params, valid = supernet
    k = 1
    e = spec.edges[k]
    inc = incoming(spec.edges, e.dst_task, e.dst_layer)
    dims = spec.layer_input_dims(e.dst_task, e.dst_layer)  # own input, then inc's blocks
    pos = inc.index(k)
    start = dims[0] + sum(dims[1 : 1 + pos])
    rows = slice(start, start + dims[1 + pos])
    zeroed = jax.tree.map(lambda x: x, params)
    layer = zeroed["towers"][f"task_{e.dst_task}"][f"layer_{e.dst_layer}"]
    kernel = np.asarray(layer["kernel"]).copy()
    assert np.abs(kernel[rows]).max() > 0  # trained under masks, the block learned
    kernel[rows] = 0.0
    layer["kernel"] = jnp.asarray(kernel)
    masks = evidence.contrast_masks(spec.num_edges, 3, 0.5, 0)
    batches = evidence.validation_batches(valid, 100, 0)
    d = evidence.contrasts(spec, zeroed, batches, masks)
    for name in ("raw_nll", "recal_nll", "recal_cvr_nll", "intercept", "shift_nll"):
        assert np.all(d[name][:, k] == 0.0), name
        assert np.abs(d[name]).sum() > 0, name  # the other edges do move the loss


def test_edge_evidence_record_and_small_validation_splits(supernet):
    spec, params, valid = supernet
    ecfg = MaskedSearch(contexts=2, batch_size=1024)  # 1000 rows: cut into 8 batches
    ev, per_edge, _ = evidence.edge_evidence(spec, params, valid, ecfg)
    assert ev.batches == evidence.MIN_BATCHES and len(per_edge) == spec.num_edges
    for e in per_edge:
        assert e.ci_lo <= e.mean <= e.ci_hi and e.decision in evidence.DECISIONS
    assert set(ev.common_mode) == set(evidence.CRITERIA)
    with pytest.raises(ValueError, match="validation split has 100 rows"):
        evidence.validation_batches(valid.take(slice(0, 100)), 1024, 0)
    strict = dataclasses.replace(ecfg, threshold=1e9)
    assert not evidence.edge_evidence(spec, params, valid, strict).kept.any()


def test_a_validation_split_too_small_to_judge_leaves_every_edge_undecided(supernet):
    spec, params, valid = supernet
    ev, per_edge, kept = evidence.edge_evidence(
        spec, params, valid.take(slice(0, 50)), MaskedSearch()
    )
    assert [e.decision for e in per_edge] == ["undecided"] * spec.num_edges
    assert not kept.any() and "50 validation rows" in ev.note and ev.threshold_rule is None


def _record(edges, decisions, z, selection=None, kept=None):
    """evidence_record of the planted decisions (and a selection that chose `kept`)."""
    from autoheri_jax.search import architecture
    from autoheri_jax.search.records import EdgeEvidence, Evidence

    per_edge = [
        EdgeEvidence(mean=1e-4 * v, ci_lo=0.0, ci_hi=0.0, z=v, decision=d)
        for d, v in zip(decisions, z, strict=True)
    ]
    ev = Evidence(
        criterion="recal_nll",
        threshold=2.6,
        batches=97,
        contexts=8,
        undecided_rule="drop",
        common_mode={},
        selection=selection,
    )
    if kept is None:
        kept = np.array([d == "kept" for d in decisions])
    return architecture.evidence_record(edges, ev, per_edge, kept, ["c", "v"], "h")


def test_the_record_and_grid_say_which_step_decided_each_edge():
    from autoheri_jax.model.edges import parse_edge
    from autoheri_jax.search import architecture

    edges = [parse_edge(e) for e in ("0.0->1.0", "0.1->1.0", "0.0->1.1", "0.1->1.1")]
    decisions, z = ["kept", "dropped", "undecided", "dropped"], [3.1, -3.6, 0.4, -2.9]
    alone = _record(edges, decisions, z)
    assert [c.decided_by for c in alone.candidates] == ["evidence"] * 4
    assert alone.kept == ("0.0->1.0",)
    # the selection chose every edge: the dropped ones are kept against the evidence, and say so
    sel = Selection(
        criterion="ctcvr_auc",
        test="DeLong",
        alpha=0.05,
        chosen="all",
        positives=400,
        candidates=[
            ScoredCandidate(name="none", edges=0, score=0.60),
            ScoredCandidate(name="all", edges=4, score=0.64),
        ],
        comparisons=[
            Comparison(
                candidate="all",
                against="none",
                diff=0.04,
                se=0.01,
                p=3e-5,
                level=0.025,
                detectable=detectable_difference(0.01, 0.025),
                wins=True,
            )
        ],
    )
    rec = _record(edges, decisions, z, sel, np.ones(4, bool))
    by = {c.edge: c for c in rec.candidates}
    assert by["0.0->1.0"].decided_by == "evidence"  # kept by both
    assert by["0.1->1.0"].decided_by == "selection"
    assert "against the evidence dropped (z -3.60" in by["0.1->1.0"].why
    text = architecture.render_architecture(rec, 2)
    assert "-3.60!" in text and "+3.10*" in text and "+0.40*" in text
    assert "all - none: +0.0400 AUC (se 0.0100, detects 0.0280 at 80% power)" in text
    assert "more edges win" in text
    assert "warning" not in text  # 400 conversions: enough for the margin
    refused = [dataclasses.replace(sel.comparisons[0], p=0.2, wins=False)]
    sel_few = dataclasses.replace(sel, positives=80, chosen="none", comparisons=refused)
    few = architecture.render_architecture(
        _record(edges, decisions, z, sel_few, np.zeros(4, bool)), 2
    )
    # refused with se 0.01 at level 0.025: it could only see 0.028 AUC, and says so
    assert "warning: on 80 validation conversions the margin refused" in few
