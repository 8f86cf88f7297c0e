import json

import numpy as np
import pytest

from autoheri_jax.metrics import (
    BinaryScores,
    auc,
    ece,
    funnel_metrics,
    mae,
    merge,
    metric_keys,
    nll,
    reliability,
    rmse,
    selection_gap,
)


def _pairwise_auc(scores, labels):
    pos, neg = scores[labels == 1], scores[labels == 0]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return wins / (len(pos) * len(neg))


@pytest.mark.parametrize("seed", range(5))
def test_auc_equals_brute_force_pair_count_with_ties(seed):
    rng = np.random.default_rng(seed)
    labels = (rng.random(400) < 0.3).astype(np.int8)
    scores = rng.integers(0, 12, 400) / 12.0 + 0.05 * labels  # heavy ties, some signal
    assert auc(BinaryScores(scores, labels)) == pytest.approx(
        _pairwise_auc(scores, labels), abs=1e-12
    )


def test_auc_edge_cases():
    assert auc(BinaryScores(np.array([0.1, 0.9]), np.array([0, 1]))) == 1.0
    assert auc(BinaryScores(np.array([0.9, 0.1]), np.array([0, 1]))) == 0.0
    assert auc(BinaryScores(np.full(4, 0.3), np.array([0, 1, 0, 1]))) == 0.5
    assert auc(BinaryScores(np.array([0.2, 0.4]), np.array([1, 1]))) is None


def test_merge_then_compute_equals_whole():
    rng = np.random.default_rng(1)
    s, y = rng.random(100), (rng.random(100) < 0.5).astype(int)
    parts = [BinaryScores(s[i : i + 30], y[i : i + 30]) for i in range(0, 100, 30)]
    assert auc(merge(*parts)) == pytest.approx(auc(BinaryScores(s, y)))


def test_nll():
    p, y = np.array([0.8, 0.2, 0.5]), np.array([1, 0, 1])
    assert nll(BinaryScores(p, y)) == pytest.approx(-np.mean(np.log([0.8, 0.8, 0.5])))
    assert np.isfinite(nll(BinaryScores(np.array([0.0, 1.0]), np.array([1, 0]))))


def test_funnel_metrics_score_cvr_on_clicks_only():
    labels = np.array([[1, 1], [1, 0], [0, 0], [0, 0]], np.float32)
    cond = np.array([[0.9, 0.7], [0.8, 0.2], [0.1, 0.9], [0.2, 0.95]])
    entire = cond[:, :1] * cond[:, 1:]
    m = funnel_metrics(
        labels, cond, np.concatenate([cond[:, :1], entire], 1), ("click", "conversion")
    )
    assert list(m) == ["ctr", "cvr", "ctcvr"]
    assert m["cvr"]["rows"] == 2 and m["cvr"]["auc"] == 1.0  # the 0.9 / 0.95 unclicked rows ignored
    assert m["ctcvr"]["rows"] == 4
    assert [k for k, _, _ in metric_keys(("click", "activation", "conversion"))] == [
        "ctr",
        "atr",
        "ctatr",
        "cvr",
        "ctcvr",
    ]


# ----------------------------------------------------------------------------- calibration


@pytest.mark.parametrize("seed", range(3))
def test_ece_of_a_calibrated_predictor_is_about_zero(seed):
    rng = np.random.default_rng(seed)
    p = rng.random(200_000)
    labels = (rng.random(p.size) < p).astype(np.int8)  # drawn from the scores themselves
    assert ece(p, labels) < 0.01
    rare = 0.06 * p  # a 3% rate: the noise floor shrinks with the rate
    assert ece(rare, (rng.random(p.size) < rare).astype(np.int8)) < 0.01


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("shift", [lambda p: 0.5 * p, lambda p: p + 0.1], ids=["half", "plus"])
def test_ece_of_a_shifted_predictor_is_not(seed, shift):
    rng = np.random.default_rng(seed)
    p = 0.9 * rng.random(200_000)
    labels = (rng.random(p.size) < shift(p)).astype(np.int8)  # scores p, labels from shift(p)
    assert ece(p, labels) > 0.04


def test_ece_hand_computed():
    # sorted by score: (0.1, 0) (0.3, 0) | (0.4, 1) (0.8, 1)
    # = 1/2 |0.2 - 0| + 1/2 |0.6 - 1| = 0.3
    scores, targets = np.array([0.4, 0.1, 0.8, 0.3]), np.array([1, 0, 1, 0])
    assert ece(scores, targets, bins=2) == pytest.approx(0.3, abs=1e-12)
    # a tie across the bin boundary observes its mean label (1/3), whatever the row order:
    # = 1/2 |0.2 - 1/3| + 1/2 |0.4 - (1/3 + 1) / 2| = 0.2
    scores, targets = np.array([0.2, 0.2, 0.2, 0.6]), np.array([1, 0, 0, 1])
    assert ece(scores, targets, bins=2) == pytest.approx(0.2, abs=1e-12)
    assert ece(scores[::-1], targets[::-1], bins=2) == pytest.approx(0.2, abs=1e-12)
    assert ece(np.array([]), np.array([])) is None and reliability([], []) is None


def test_reliability_bins_have_equal_mass_and_ignore_row_order():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 7, 1003) / 7.0  # heavy ties across bin boundaries
    labels = (rng.random(1003) < scores).astype(np.int8)
    rel = reliability(scores, labels, bins=10)
    assert len(rel["rows"]) == 10 and sum(rel["rows"]) == 1003
    assert max(rel["rows"]) - min(rel["rows"]) <= 1
    assert rel["score_min"] == sorted(rel["score_min"])
    lo, mid, hi = (np.array(rel[f]) for f in ("score_min", "pred", "score_max"))
    assert np.all(lo - 1e-12 <= mid) and np.all(mid <= hi + 1e-12)
    for seed in range(3):
        perm = np.random.default_rng(seed).permutation(1003)
        other = reliability(scores[perm], labels[perm], bins=10)
        for field in rel:
            np.testing.assert_allclose(other[field], rel[field], rtol=1e-12, err_msg=field)
    assert json.loads(json.dumps(rel)) == rel
    flat = reliability(np.full(100, 0.3), labels[:100], bins=4)  # ties are not split by label
    np.testing.assert_allclose(flat["obs"], labels[:100].mean(), rtol=1e-12)
    assert reliability(np.array([0.5, 0.2]), np.array([1, 0]), bins=10)["rows"] == [1, 1]


def test_mae_and_rmse():
    q, p = np.array([0.1, 0.5]), np.array([0.2, 0.2])
    assert mae(q, p) == pytest.approx(0.2) and rmse(q, p) == pytest.approx(np.sqrt(0.05))
    assert mae([], []) is None and rmse([], []) is None


LABELS = np.array([[1, 1], [1, 0], [0, 0], [0, 0]], np.float32)
PRED = np.array([[0.9, 0.5], [0.8, 0.3], [0.1, 0.7], [0.2, 0.2]])
TRUTH = np.array([[0.8, 0.6], [0.7, 0.2], [0.2, 0.4], [0.1, 0.1]])
STAGES = ("click", "conversion")


def test_selection_gap_hand_made():
    m = funnel_metrics(LABELS, PRED, np.cumprod(PRED, 1), STAGES, TRUTH)
    gap = m["cvr"]["selection_gap"]
    assert gap["pred_scored"] == pytest.approx(0.4)  # clicked rows: (0.5 + 0.3) / 2
    assert gap["pred_all"] == pytest.approx(0.425)  # (0.5 + 0.3 + 0.7 + 0.2) / 4
    assert gap["gap"] == pytest.approx(0.025)
    assert gap["true_scored"] == pytest.approx(0.4) and gap["true_all"] == pytest.approx(0.325)
    assert gap["bias_all"] == pytest.approx(0.1)
    assert "selection_gap" not in m["ctr"] and "selection_gap" not in m["ctcvr"]
    plain = funnel_metrics(LABELS, PRED, np.cumprod(PRED, 1), STAGES)["cvr"]["selection_gap"]
    assert set(plain) == {"pred_scored", "pred_all", "gap"}
    none = selection_gap(PRED[:, 1], np.zeros(4, bool))  # nobody clicked
    assert none["pred_scored"] is None and none["gap"] is None


def test_funnel_metrics_calibration_fields():
    entire = np.cumprod(PRED, 1)
    m = funnel_metrics(LABELS, PRED, entire, STAGES, TRUTH)
    for key in ("ctr", "cvr", "ctcvr"):  # the existing fields stay as they were
        assert {"auc", "nll", "rows", "positives", "soft_auc", "excess_nll"} <= set(m[key])
        assert sum(m[key]["reliability"]["rows"]) == m[key]["rows"]
    assert m["cvr"]["ece"] == pytest.approx(ece(PRED[:2, 1], LABELS[:2, 1]))
    assert m["cvr"]["ece_true"] == pytest.approx(ece(PRED[:2, 1], TRUTH[:2, 1]))
    assert m["cvr"]["mae_true"] == pytest.approx(mae(PRED[:2, 1], TRUTH[:2, 1]))
    assert m["cvr"]["rmse_true"] == pytest.approx(rmse(PRED[:2, 1], TRUTH[:2, 1]))
    assert m["cvr"]["mae_true_all"] == pytest.approx(mae(PRED[:, 1], TRUTH[:, 1]))
    assert m["ctcvr"]["mae_true"] == pytest.approx(mae(entire[:, 1], TRUTH.prod(1)))
    assert "mae_true_all" not in m["ctr"] and "mae_true_all" not in m["ctcvr"]
    assert "ece_true" not in funnel_metrics(LABELS, PRED, entire, STAGES)["cvr"]
    json.dumps(m)  # results.json takes it as it is
    oracle = funnel_metrics(LABELS, TRUTH, np.cumprod(TRUTH, 1), STAGES, TRUTH)
    for key in ("ctr", "cvr", "ctcvr"):  # the truth against itself
        assert oracle[key]["ece_true"] == pytest.approx(0.0, abs=1e-12)
        assert oracle[key]["mae_true"] == 0.0 and oracle[key]["rmse_true"] == 0.0
    assert oracle["cvr"]["mae_true_all"] == 0.0
    assert oracle["cvr"]["selection_gap"]["bias_all"] == 0.0
    unclicked = funnel_metrics(np.zeros((4, 2)), PRED, entire, STAGES)["cvr"]
    assert unclicked["rows"] == 0 and unclicked["ece"] is None and unclicked["reliability"] is None


def test_ece_true_of_the_truth_is_zero_on_many_rows():
    p = np.random.default_rng(0).random(50_000)
    assert ece(p, p) == pytest.approx(0.0, abs=1e-12)
