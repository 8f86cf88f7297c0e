import numpy as np
import pytest

from autoheri_jax.metrics import BinaryScores, auc, funnel_metrics, merge, metric_keys, nll


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
