"""Evaluation as it was before the fast path (22b0a2f), kept as the reference the fast path must
match: `predict` (training-layout batches, every bag padded to max_bag_len, one device round
trip per batch) and `funnel_metrics` (scipy's midranks for AUC, one argsort per metric).
tests/test_eval_fast.py compares against it; benchmarks/eval_speed.py --old times it."""

from __future__ import annotations

import jax
import numpy as np
from scipy import stats

from autoheri_jax.data.dataset import eval_batch_indices
from autoheri_jax.metrics import (
    CALIBRATION_BINS,
    BinaryScores,
    excess_nll,
    funnel_scores,
    mae,
    metric_keys,
    nll,
    rmse,
    selection_gap,
)
from autoheri_jax.train.predict import make_predict_fn


def predict(spec, params, data, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    predict_fn, cond, entire = make_predict_fn(spec), [], []
    for idx, valid in eval_batch_indices(data.num_rows, min(batch_size, data.num_rows)):
        batch = data.batch(idx)
        batch.pop("labels")
        c, e = jax.device_get(predict_fn(params, batch))
        cond.append(c[:valid])
        entire.append(e[:valid])
    return np.concatenate(cond), np.concatenate(entire)


def auc(state: BinaryScores) -> float | None:
    labels = np.asarray(state.labels).astype(bool)
    n_pos = int(labels.sum())
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = stats.rankdata(np.asarray(state.scores, dtype=np.float64))
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def soft_auc(scores, probs) -> float | None:
    s, p = np.asarray(scores, np.float64), np.asarray(probs, np.float64)
    if len(s) < 2:
        return None
    order = np.argsort(s, kind="stable")
    s, p = s[order], p[order]
    starts = np.flatnonzero(np.concatenate([[True], s[1:] != s[:-1]]))
    pos, neg = np.add.reduceat(p, starts), np.add.reduceat(1.0 - p, starts)
    below = np.cumsum(neg) - neg
    self_pairs = np.sum(p * (1.0 - p))
    wins = np.sum(pos * (below + 0.5 * neg)) - 0.5 * self_pairs
    total = p.sum() * (1.0 - p).sum() - self_pairs
    return float(wins / total) if total > 0 else None


def reliability(scores, targets, bins: int = 10) -> dict | None:
    if len(scores) == 0:
        return None
    s, t = np.asarray(scores, np.float64).ravel(), np.asarray(targets, np.float64).ravel()
    order = np.argsort(s, kind="stable")
    s, t = s[order], t[order]
    starts = np.flatnonzero(np.concatenate([[True], s[1:] != s[:-1]]))
    counts = np.diff(np.append(starts, len(s)))
    t = np.repeat(np.add.reduceat(t, starts) / counts, counts)
    parts = [(s[i], t[i]) for i in np.array_split(np.arange(len(s)), min(bins, len(s)))]
    return {
        "pred": [float(a.mean()) for a, _ in parts],
        "obs": [float(b.mean()) for _, b in parts],
        "rows": [len(a) for a, _ in parts],
        "score_min": [float(a[0]) for a, _ in parts],
        "score_max": [float(a[-1]) for a, _ in parts],
    }


def ece_of(rel: dict | None) -> float | None:
    if rel is None:
        return None
    gaps = (n * abs(p - o) for n, p, o in zip(rel["rows"], rel["pred"], rel["obs"], strict=True))
    return float(sum(gaps) / sum(rel["rows"]))


def funnel_metrics(labels, cond_probs, entire_probs, stage_names, true_cond=None) -> dict:
    scored = funnel_scores(labels, cond_probs, entire_probs, stage_names)
    out = {
        key: {
            "auc": auc(s),
            "nll": nll(s),
            "rows": len(s.labels),
            "positives": int(np.sum(s.labels)),
            "reliability": reliability(s.scores, s.labels, CALIBRATION_BINS),
        }
        for key, s in scored.items()
    }
    for fields in out.values():
        fields["ece"] = ece_of(fields["reliability"])
    keys = metric_keys(stage_names)
    for key, k, kind in keys:
        if kind == "conditional" and k:
            truth_k = None if true_cond is None else true_cond[:, k]
            out[key]["selection_gap"] = selection_gap(
                cond_probs[:, k], labels[:, k - 1] > 0.5, truth_k
            )
    if true_cond is None:
        return out
    true_entire = np.cumprod(np.asarray(true_cond, np.float64), axis=1)
    truth = funnel_scores(labels, true_cond, true_entire, stage_names)
    for key, k, kind in keys:
        q, p = scored[key].scores, truth[key].scores
        out[key]["soft_auc"] = soft_auc(q, p)
        out[key]["excess_nll"] = excess_nll(q, p)
        out[key]["ece_true"] = ece_of(reliability(q, p, CALIBRATION_BINS))
        out[key]["mae_true"] = mae(q, p)
        out[key]["rmse_true"] = rmse(q, p)
        if kind == "conditional" and k > 0:
            out[key]["soft_auc_all"] = soft_auc(cond_probs[:, k], true_cond[:, k])
            out[key]["excess_nll_all"] = excess_nll(cond_probs[:, k], true_cond[:, k])
            out[key]["mae_true_all"] = mae(cond_probs[:, k], true_cond[:, k])
    return out
