"""Exact ranking and calibration metrics for funnel stages.

Metrics follow the mergeable-state pattern: `BinaryScores` is the summary state (it is exact,
so it keeps every score), `merge` joins shards or batches, and `auc` / `nll` are pure
computations over it. AUC is the Mann-Whitney statistic with tied scores given average rank,
so it equals the fraction of (positive, negative) pairs ranked right, counting ties as half.

Where the true probabilities are known (the simulator), `funnel_metrics` also scores every key
against them, which removes the label-sampling noise that dominates a rare task's AUC:

  soft_auc      AUC with soft labels: row i counts as p_i of a positive and 1 - p_i of a
                negative (p = the true probability). Equals the sampled-label AUC in
                expectation over many label draws of the same rows, without their noise.
  excess_nll    mean KL(p || q) of the true Bernoulli from the predicted one (nats): the
                log-loss above what the oracle pays on the same rows; 0 only for q = p.
  *_all         for a conditional later stage (cvr): the same two over every impression, the
                true post-click probability against the predicted one on all rows (the
                quantity an ad system ranks and bids with), not only on the clicked ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

STAGE_ABBREV = {"click": "ctr", "activation": "atr", "conversion": "cvr"}
_NLL_EPS = 1e-7


class BinaryScores(NamedTuple):
    scores: np.ndarray  # float [N] predicted probability of the positive class
    labels: np.ndarray  # {0, 1} [N]


def merge(*states: BinaryScores) -> BinaryScores:
    return BinaryScores(
        np.concatenate([s.scores for s in states]), np.concatenate([s.labels for s in states])
    )


def average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of x, tied values sharing the mean of their ranks."""
    order = np.argsort(x, kind="stable")
    _, inverse, counts = np.unique(x[order], return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    mean_rank = ends - (counts - 1) / 2.0
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = mean_rank[inverse]
    return ranks


def auc(state: BinaryScores) -> float | None:
    """Exact ROC AUC; None when one class is absent (undefined, never a silent 0.5)."""
    labels = np.asarray(state.labels).astype(bool)
    n_pos = int(labels.sum())
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = average_ranks(np.asarray(state.scores, dtype=np.float64))
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def nll(state: BinaryScores) -> float | None:
    """Mean binary cross-entropy (nats), probabilities clipped to [1e-7, 1 - 1e-7]."""
    if len(state.labels) == 0:
        return None
    p = np.clip(np.asarray(state.scores, dtype=np.float64), _NLL_EPS, 1 - _NLL_EPS)
    y = np.asarray(state.labels, dtype=np.float64)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def soft_auc(scores: np.ndarray, probs: np.ndarray) -> float | None:
    """Exact AUC with soft labels over pairs of distinct rows:

        sum_{i != j} p_i (1 - p_j) ([s_i > s_j] + [s_i == s_j] / 2)  /  sum_{i != j} p_i (1 - p_j)

    (p: true probabilities, s: scores). With 0/1 labels it is `auc`. None when every row is
    certain and of one class (no pair has weight)."""
    s = np.asarray(scores, np.float64)
    p = np.asarray(probs, np.float64)
    if len(s) < 2:
        return None
    order = np.argsort(s, kind="stable")
    s, p = s[order], p[order]
    starts = np.flatnonzero(np.concatenate([[True], s[1:] != s[:-1]]))
    pos = np.add.reduceat(p, starts)  # per distinct score: positive and negative mass
    neg = np.add.reduceat(1.0 - p, starts)
    below = np.cumsum(neg) - neg  # negative mass strictly below each distinct score
    self_pairs = np.sum(p * (1.0 - p))  # i == j: a tie of a row with itself, not a pair
    wins = np.sum(pos * (below + 0.5 * neg)) - 0.5 * self_pairs
    total = p.sum() * (1.0 - p).sum() - self_pairs
    return float(wins / total) if total > 0 else None


def excess_nll(scores: np.ndarray, probs: np.ndarray) -> float | None:
    """Mean KL(Bernoulli(p) || Bernoulli(q)) in nats: the model's expected log-loss above the
    oracle's on the same rows; both clipped as in `nll`."""
    if len(scores) == 0:
        return None
    q = np.clip(np.asarray(scores, np.float64), _NLL_EPS, 1 - _NLL_EPS)
    p = np.clip(np.asarray(probs, np.float64), _NLL_EPS, 1 - _NLL_EPS)
    kl = p * (np.log(p) - np.log(q)) + (1 - p) * (np.log1p(-p) - np.log1p(-q))
    return float(np.mean(kl))


def metric_keys(stage_names: Sequence[str]) -> list[tuple[str, int, str]]:
    """(key, stage, kind) per reported metric. kind "conditional" scores stage k on the rows that
    reached stage k-1 (CVR over clicks); "entire" scores it over all impressions (CTCVR)."""
    keys = []
    for k, stage in enumerate(stage_names):
        short = STAGE_ABBREV.get(stage, f"{stage}_rate")
        keys.append((short, k, "conditional"))
        if k > 0:
            keys.append((f"ct{short}", k, "entire"))
    return keys


def funnel_scores(
    labels: np.ndarray, cond_probs: np.ndarray, entire_probs: np.ndarray, stage_names: Sequence[str]
) -> dict[str, BinaryScores]:
    """labels, cond_probs, entire_probs: [N, T] -> the scored subset of every metric key."""
    out = {}
    for key, k, kind in metric_keys(stage_names):
        if kind == "conditional":
            rows = np.ones(len(labels), bool) if k == 0 else labels[:, k - 1] > 0.5
            out[key] = BinaryScores(cond_probs[rows, k], labels[rows, k])
        else:
            out[key] = BinaryScores(entire_probs[:, k], labels[:, k])
    return out


def funnel_metrics(
    labels: np.ndarray,
    cond_probs: np.ndarray,
    entire_probs: np.ndarray,
    stage_names: Sequence[str],
    true_cond: np.ndarray | None = None,
) -> dict[str, dict]:
    """Per metric key: auc, nll, rows scored and positives among them; with `true_cond`
    ([N, T] true conditional probabilities) also soft_auc and excess_nll (and, for later
    conditional stages, soft_auc_all and excess_nll_all over every impression)."""
    scored = funnel_scores(labels, cond_probs, entire_probs, stage_names)
    out = {
        key: {
            "auc": auc(s),
            "nll": nll(s),
            "rows": len(s.labels),
            "positives": int(np.sum(s.labels)),
        }
        for key, s in scored.items()
    }
    if true_cond is None:
        return out
    true_entire = np.cumprod(np.asarray(true_cond, np.float64), axis=1)
    truth = funnel_scores(labels, true_cond, true_entire, stage_names)  # same rows, true p
    for key, k, kind in metric_keys(stage_names):
        p = truth[key].scores
        out[key]["soft_auc"] = soft_auc(scored[key].scores, p)
        out[key]["excess_nll"] = excess_nll(scored[key].scores, p)
        if kind == "conditional" and k > 0:
            out[key]["soft_auc_all"] = soft_auc(cond_probs[:, k], true_cond[:, k])
            out[key]["excess_nll_all"] = excess_nll(cond_probs[:, k], true_cond[:, k])
    return out
