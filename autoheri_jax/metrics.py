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

Calibration. A debiasing claim (ESMM-style training fixes pCVR on unclicked impressions) is a
claim about the level of the predicted probabilities, which AUC is blind to, so every key also
gets (bins: `CALIBRATION_BINS` equal-mass bins of the scored rows, see `reliability`):

  ece           expected calibration error against the labels: sum_b (n_b / N) |q_b - y_b|
                (q_b, y_b: mean prediction and mean label in bin b).
  reliability   those bins: {"pred", "obs", "rows", "score_min", "score_max"}, one list entry
                per bin, in increasing score (the reliability diagram's points).
  ece_true      (true probabilities known) the same with the true probability as the observed
                value: free of label noise, 0 only for a prediction calibrated bin by bin.
  mae_true, rmse_true
                (true probabilities known) mean |q - p| and sqrt(mean (q - p)^2) per row.
  mae_true_all  for a conditional later stage: mean |q - p| over every impression.
  selection_gap for a conditional later stage (cvr): the mean prediction over the rows that
                reached the previous stage ("scored": clicked) and over every impression, and
                "gap" = all - scored; with the truth also "true_scored", "true_all" and
                "bias_all" = mean prediction - mean truth over every impression. A model fit
                on clicked rows only carries their level to every impression; the true
                means show how far apart the two populations really are.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from scipy import stats

STAGE_ABBREV = {"click": "ctr", "activation": "atr", "conversion": "cvr"}
_NLL_EPS = 1e-7
CALIBRATION_BINS = 10  # equal-mass bins of ece / reliability in funnel_metrics


class BinaryScores(NamedTuple):
    scores: np.ndarray  # float [N] predicted probability of the positive class
    labels: np.ndarray  # {0, 1} [N]


def merge(*states: BinaryScores) -> BinaryScores:
    return BinaryScores(
        np.concatenate([s.scores for s in states]), np.concatenate([s.labels for s in states])
    )


def auc(state: BinaryScores) -> float | None:
    """Exact ROC AUC; None when one class is absent (undefined, never a silent 0.5)."""
    labels = np.asarray(state.labels).astype(bool)
    n_pos = int(labels.sum())
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = stats.rankdata(np.asarray(state.scores, dtype=np.float64))  # ties: mean rank
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


def _equal_mass_bins(
    scores: np.ndarray, targets: np.ndarray, bins: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(scores, observed values) of each of min(bins, N) bins of (nearly) equal row count, in
    increasing score; np.array_split makes the counts differ by at most 1 (the first N mod bins
    bins hold one row more).

    Rows are sorted stably by score and every row of a group of tied scores observes the group's
    mean target. A tie straddling a bin boundary thus splits its rows between the bins without
    its labels deciding which row goes where: the result is the average over every order of
    the tied rows, so it depends on the multiset of (score, target) pairs only, never on row
    order. (Breaking ties by target instead would push a tie's positives into the upper bin
    and invent miscalibration: a constant predictor would get a 0 bin and a >> rate bin.)"""
    s = np.asarray(scores, np.float64).ravel()
    t = np.asarray(targets, np.float64).ravel()
    if len(s) != len(t):
        raise ValueError(f"scores ({len(s)}) and targets ({len(t)}) differ in length")
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    if len(s) == 0:
        return []
    order = np.argsort(s, kind="stable")
    s, t = s[order], t[order]
    starts = np.flatnonzero(np.concatenate([[True], s[1:] != s[:-1]]))
    counts = np.diff(np.append(starts, len(s)))
    t = np.repeat(np.add.reduceat(t, starts) / counts, counts)  # a tie's mean, on every row
    return [(s[i], t[i]) for i in np.array_split(np.arange(len(s)), min(bins, len(s)))]


def reliability(scores: np.ndarray, targets: np.ndarray, bins: int = 10) -> dict | None:
    """Reliability diagram over equal-mass bins: per bin (increasing score) the mean predicted
    probability ("pred"), the mean observed value ("obs": the label rate, or the mean true
    probability when `targets` are probabilities), the row count ("rows") and the scores'
    range ("score_min", "score_max"). A calibrated predictor has pred_b ~ obs_b in every bin.

    Equal-mass rather than equal-width bins: at a 3% rate equal-width bins put nearly every row
    in the first bin; equal mass gives every bin the same label noise, sd(obs_b) ~
    sqrt(q_b (1 - q_b) / n_b). None for empty input (undefined, like `nll`)."""
    if len(scores) == 0:
        return None
    parts = _equal_mass_bins(scores, targets, bins)
    return {
        "pred": [float(s.mean()) for s, _ in parts],
        "obs": [float(t.mean()) for _, t in parts],
        "rows": [len(s) for s, _ in parts],
        "score_min": [float(s[0]) for s, _ in parts],
        "score_max": [float(s[-1]) for s, _ in parts],
    }


def ece(scores: np.ndarray, targets: np.ndarray, bins: int = 10) -> float | None:
    """Expected calibration error over the equal-mass bins of `reliability`:

        ECE = sum_b (n_b / N) |mean_pred_b - mean_obs_b|

    in probability units (0.005 at a 3% rate is a 17% relative error). With 0/1 labels it
    carries label noise, about sqrt(2 q (1 - q) bins / (pi N)) for a perfectly calibrated q
    (so compare models on the same rows, or use the truth: `ece_true`). None for empty input."""
    return ece_of(reliability(scores, targets, bins))


def ece_of(rel: dict | None) -> float | None:
    """`ece` from bins `reliability` already made (one sort of the scores, not two)."""
    if rel is None:
        return None
    rows = rel["rows"]
    gaps = (n * abs(p - o) for n, p, o in zip(rows, rel["pred"], rel["obs"], strict=True))
    return float(sum(gaps) / sum(rows))


def mae(scores: np.ndarray, probs: np.ndarray) -> float | None:
    """Mean |q - p| per row (q predicted, p true): the calibration error no binning can hide
    (bins average errors of opposite sign away). None for empty input."""
    if len(scores) == 0:
        return None
    return float(np.mean(np.abs(np.asarray(scores, np.float64) - np.asarray(probs, np.float64))))


def rmse(scores: np.ndarray, probs: np.ndarray) -> float | None:
    """sqrt(mean (q - p)^2): as `mae`, weighting the large errors more. None for empty input."""
    if len(scores) == 0:
        return None
    d = np.asarray(scores, np.float64) - np.asarray(probs, np.float64)
    return float(np.sqrt(np.mean(d * d)))


def selection_gap(
    pred: np.ndarray, reached: np.ndarray, truth: np.ndarray | None = None
) -> dict[str, float | None]:
    """The selection effect on a conditional stage's prediction (pred: [N], every impression;
    reached: [N] bool, the rows that reached the previous stage, e.g. clicked):

        pred_scored = mean(q over reached rows), pred_all = mean(q over all rows),
        gap = pred_all - pred_scored

    with the truth p ([N]) also true_scored and true_all (the same means of p) and
    bias_all = pred_all - true_all. The truth's own gap (true_all - true_scored) is the real
    selection bias; a model whose gap is ~0 while the truth's is not carries the clicked
    rows' level to every impression. A mean over no rows is None."""
    q = np.asarray(pred, np.float64)
    reached = np.asarray(reached, bool)
    mean = lambda x: float(x.mean()) if len(x) else None
    out = {"pred_scored": mean(q[reached]), "pred_all": mean(q)}
    both = out["pred_scored"] is not None and out["pred_all"] is not None
    out["gap"] = out["pred_all"] - out["pred_scored"] if both else None
    if truth is not None:
        p = np.asarray(truth, np.float64)
        out["true_scored"], out["true_all"] = mean(p[reached]), mean(p)
        out["bias_all"] = None if out["pred_all"] is None else out["pred_all"] - out["true_all"]
    return out


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
    """Per metric key: auc, nll, rows scored, positives among them, ece and reliability
    (against the labels); for later conditional stages also selection_gap. With `true_cond`
    ([N, T] true conditional probabilities) also soft_auc, excess_nll, ece_true, mae_true and
    rmse_true (and, for later conditional stages, soft_auc_all, excess_nll_all and
    mae_true_all over every impression). The fields are defined in the module docstring."""
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
    later = [(key, k) for key, k, kind in metric_keys(stage_names) if kind == "conditional" and k]
    for key, k in later:
        reached = labels[:, k - 1] > 0.5  # the rows funnel_scores scores this key on
        truth_k = None if true_cond is None else true_cond[:, k]
        out[key]["selection_gap"] = selection_gap(cond_probs[:, k], reached, truth_k)
    if true_cond is None:
        return out
    true_entire = np.cumprod(np.asarray(true_cond, np.float64), axis=1)
    truth = funnel_scores(labels, true_cond, true_entire, stage_names)  # same rows, true p
    for key, k, kind in metric_keys(stage_names):
        q, p = scored[key].scores, truth[key].scores
        out[key]["soft_auc"] = soft_auc(q, p)
        out[key]["excess_nll"] = excess_nll(q, p)
        out[key]["ece_true"] = ece(q, p, CALIBRATION_BINS)
        out[key]["mae_true"] = mae(q, p)
        out[key]["rmse_true"] = rmse(q, p)
        if kind == "conditional" and k > 0:
            out[key]["soft_auc_all"] = soft_auc(cond_probs[:, k], true_cond[:, k])
            out[key]["excess_nll_all"] = excess_nll(cond_probs[:, k], true_cond[:, k])
            out[key]["mae_true_all"] = mae(cond_probs[:, k], true_cond[:, k])
    return out
