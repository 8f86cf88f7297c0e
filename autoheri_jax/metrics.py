"""Exact ranking and calibration metrics for funnel stages.

Metrics follow the mergeable-state pattern: `BinaryScores` is the summary state (it is exact,
so it keeps every score), `merge` joins shards or batches, and `auc` / `nll` are pure
computations over it. AUC is the Mann-Whitney statistic with tied scores given average rank,
so it equals the fraction of (positive, negative) pairs ranked right, counting ties as half.
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
    labels: np.ndarray, cond_probs: np.ndarray, entire_probs: np.ndarray, stage_names: Sequence[str]
) -> dict[str, dict]:
    """Per metric key: auc, nll, rows scored and positives among them."""
    return {
        key: {
            "auc": auc(s),
            "nll": nll(s),
            "rows": len(s.labels),
            "positives": int(np.sum(s.labels)),
        }
        for key, s in funnel_scores(labels, cond_probs, entire_probs, stage_names).items()
    }
