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

Speed. Every metric that ranks (auc, soft_auc, reliability, ece, ece_true) reads one stable
order of the scores (`rank`): float32 scores (the models' own dtype, and any float64 array
that float32 holds exactly) are sorted as one uint64 array of (order-preserving score bits,
row index), an integer sort several times faster than an argsort that gives the same stable
order. `funnel_metrics` ranks each score column once and reuses the order for every metric
of its keys (a conditional key's scored rows are a filter of its column's order), and scores
the columns in parallel threads (numpy's sorts and reductions release the GIL). The values
are those of the definitions above: AUC from exact integer pair counts, the rest from the
same sorted values as a direct computation.
"""

from __future__ import annotations

import itertools
import os
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numpy as np

STAGE_ABBREV = {"click": "ctr", "activation": "atr", "conversion": "cvr"}
_NLL_EPS = 1e-7
CALIBRATION_BINS = 10  # equal-mass bins of ece / reliability in funnel_metrics
_CHUNK = 1 << 20  # rows per chunk of an elementwise pass


class BinaryScores(NamedTuple):
    scores: np.ndarray  # float [N] predicted probability of the positive class
    labels: np.ndarray  # {0, 1} [N]


def merge(*states: BinaryScores) -> BinaryScores:
    return BinaryScores(
        np.concatenate([s.scores for s in states]), np.concatenate([s.labels for s in states])
    )


class Ranked(NamedTuple):
    """Scores in one stable ascending order, and where each run of tied scores starts."""

    order: np.ndarray  # int64 [N]: a stable argsort of the scores
    scores: np.ndarray  # float64 [N]: the scores in that order
    starts: np.ndarray  # int64 [G]: the first position of each distinct score (G groups)

    def counts(self) -> np.ndarray:
        """Rows per distinct score [G]."""
        return np.diff(np.append(self.starts, len(self.scores)))

    def take(self, values: np.ndarray, dtype=None) -> np.ndarray:
        """values (in row order) in the ranking's order."""
        return np.asarray(values, dtype).ravel()[self.order]


_SIGN = np.uint32(0x80000000)
_LITTLE = sys.byteorder == "little"  # a packed uint64's low half is its first uint32


def _as_float32(s: np.ndarray) -> np.ndarray | None:
    """s as float32 with -0.0 made +0.0, when that keeps every value (NaN never does)."""
    if s.dtype == np.float32:
        f = s
    elif s.dtype == np.float64:
        f = s.astype(np.float32)
        if not np.array_equal(f, s):
            return None
    else:
        return None
    if np.isnan(f).any():
        return None
    return f + np.float32(0.0)  # -0.0 + 0.0 = +0.0: equal floats get equal bits


def _starts(new: np.ndarray) -> np.ndarray:
    """First position of each run, from new[i] = (sorted[i + 1] != sorted[i])."""
    return np.concatenate([np.zeros(1, np.int64), np.flatnonzero(new) + 1])


def rank(scores: np.ndarray) -> Ranked:
    """One stable ascending order of `scores` (ties keep row order: np.argsort(kind="stable")),
    with the sorted scores and the starts of the tied runs: the one sort that every ranking
    metric of a key reads."""
    s = np.asarray(scores).ravel()
    n = len(s)
    f = _as_float32(s) if 0 < n < 2**32 else None
    if f is None:  # the general case: float64 that float32 cannot hold, NaN, other dtypes
        s = s.astype(np.float64, copy=False)
        order = np.argsort(s, kind="stable")
        ordered = s[order]
        new = ordered[1:] != ordered[:-1]
    else:  # the order-preserving uint32 of each float above the row index: one integer sort
        bits = f.view(np.uint32)
        signed = bool(np.signbit(f).any())  # (-0.0 is gone) flip the bits of the negatives
        key = np.where(bits & _SIGN, ~bits, bits | _SIGN) if signed else bits
        packed = np.empty(n, np.uint64)
        if _LITTLE:  # a uint64's high half is its second uint32: write both halves in place
            halves = packed.view(np.uint32)
            halves[1::2], halves[0::2] = key, np.arange(n, dtype=np.uint32)
        else:
            np.left_shift(key, 32, out=packed, dtype=np.uint64)
            packed |= np.arange(n, dtype=np.uint64)
        del key, bits, f
        packed.sort()
        if _LITTLE:
            halves = packed.view(np.uint32)
            index, key = halves[0::2], halves[1::2]
        else:
            index, key = packed & np.uint64(0xFFFFFFFF), (packed >> np.uint64(32)).astype(np.uint32)
        order = index.astype(np.int64)
        new = key[1:] != key[:-1]
        bits = np.where(key & _SIGN, key ^ _SIGN, ~key) if signed else key
        ordered = bits.view(np.float32).astype(np.float64)
    starts = _starts(new) if n else np.zeros(0, np.int64)
    return Ranked(order, ordered, starts)


def subset_ranked(ranked: Ranked, rows: np.ndarray) -> Ranked:
    """The ranking of the rows where `rows` (bool [N]) holds, numbered among themselves, from
    the ranking of all rows: filtering a stable order keeps it stable, so no second sort."""
    rows = np.asarray(rows, bool)
    keep = rows[ranked.order]
    position = np.cumsum(rows) - 1  # row -> its index among the kept rows
    s = ranked.scores[keep]
    starts = _starts(s[1:] != s[:-1]) if len(s) else ranked.starts[:0]
    return Ranked(position[ranked.order[keep]], s, starts)


def auc_ranked(ranked: Ranked, labels: np.ndarray) -> float | None:
    """`auc` from a ranking of the scores (labels in row order)."""
    return _auc_sorted(ranked, ranked.take(labels))


def _auc_sorted(ranked: Ranked, labels: np.ndarray) -> float | None:
    """`auc` from a ranking and the labels in its order: per distinct score, its positives win
    over the negatives below it and tie with its own negatives (half), in integer counts."""
    y = labels != 0
    n_pos = int(np.count_nonzero(y))
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    if np.isnan(ranked.scores[-1]):  # NaN sorts last: a NaN score leaves AUC undefined (NaN)
        return float("nan")
    pos = np.add.reduceat(y, ranked.starts, dtype=np.int64)
    neg = ranked.counts() - pos
    below = np.cumsum(neg) - neg  # negatives strictly below each distinct score
    twice_wins = int(np.dot(pos, 2 * below + neg))  # <= 2 n_pos n_neg: no overflow
    return twice_wins / (2 * n_pos * n_neg)  # Python ints: one correctly rounded division


def auc(state: BinaryScores) -> float | None:
    """Exact ROC AUC; None when one class is absent (undefined, never a silent 0.5): the
    Mann-Whitney statistic with midranks, i.e. the fraction of (positive, negative) pairs
    ranked right, ties counting half. (Labels: nonzero is positive.)"""
    return auc_ranked(rank(state.scores), state.labels)


def nll(state: BinaryScores) -> float | None:
    """Mean binary cross-entropy (nats), probabilities clipped to [1e-7, 1 - 1e-7]."""
    if len(state.labels) == 0:
        return None
    y = np.asarray(state.labels).ravel()
    one = y == 1
    if np.count_nonzero(one) + np.count_nonzero(y == 0) != len(y):  # soft labels
        p = np.clip(np.asarray(state.scores, dtype=np.float64), _NLL_EPS, 1 - _NLL_EPS)
        y = y.astype(np.float64)
        return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))
    # 0/1 labels: a row's term y log p + (1 - y) log1p(-p) is exactly one of the two logs (the
    # other, times 0, adds -0.0), so compute that one only, a chunk at a time (no temporaries
    # the size of the split), into one array whose mean is the formula's to the last bit
    scores = np.asarray(state.scores).ravel()
    terms = np.empty(len(y))
    for a in range(0, len(y), _CHUNK):
        p = np.clip(scores[a : a + _CHUNK].astype(np.float64), _NLL_EPS, 1 - _NLL_EPS)
        t, o = np.log1p(-p), one[a : a + _CHUNK]
        t[o] = np.log(p[o])
        terms[a : a + _CHUNK] = t
    return float(-np.mean(terms))


def soft_auc(scores: np.ndarray, probs: np.ndarray) -> float | None:
    """Exact AUC with soft labels over pairs of distinct rows:

        sum_{i != j} p_i (1 - p_j) ([s_i > s_j] + [s_i == s_j] / 2)  /  sum_{i != j} p_i (1 - p_j)

    (p: true probabilities, s: scores). With 0/1 labels it is `auc`. None when every row is
    certain and of one class (no pair has weight)."""
    if len(scores) < 2:
        return None
    return soft_auc_ranked(rank(scores), probs)


def soft_auc_ranked(ranked: Ranked, probs: np.ndarray) -> float | None:
    """`soft_auc` from a ranking of the scores (probs in row order)."""
    if len(ranked.scores) < 2:
        return None
    p = ranked.take(probs, np.float64)
    pos = np.add.reduceat(p, ranked.starts)  # per distinct score: positive and negative mass
    neg = np.add.reduceat(1.0 - p, ranked.starts)
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
    s = np.asarray(scores).ravel()
    t = np.asarray(targets, np.float64).ravel()
    if len(s) != len(t):
        raise ValueError(f"scores ({len(s)}) and targets ({len(t)}) differ in length")
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    if len(s) == 0:
        return []
    return _bins_ranked(rank(s), t, bins)


def _bins_ranked(
    ranked: Ranked, targets: np.ndarray, bins: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """`_equal_mass_bins` from a ranking of the scores (targets in row order)."""
    n = len(ranked.scores)
    if len(targets) != n:
        raise ValueError(f"scores ({n}) and targets ({len(targets)}) differ in length")
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    return _bins_sorted(ranked, ranked.take(targets, np.float64), bins)


def _bins_sorted(ranked: Ranked, t: np.ndarray, bins: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """`_bins_ranked` from the targets in the ranking's order."""
    s, n = ranked.scores, len(ranked.scores)
    counts = ranked.counts()
    t = np.repeat(np.add.reduceat(t, ranked.starts) / counts, counts)  # a tie's mean, every row
    k = min(bins, n)  # np.array_split's sizes: the first n mod k bins hold one row more
    sizes = np.full(k, n // k)
    sizes[: n % k] += 1
    edges = np.concatenate([[0], np.cumsum(sizes)])
    return [(s[a:b], t[a:b]) for a, b in itertools.pairwise(edges)]


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
    return _reliability_of(_equal_mass_bins(scores, targets, bins))


def reliability_ranked(ranked: Ranked, targets: np.ndarray, bins: int = 10) -> dict | None:
    """`reliability` from a ranking of the scores (targets in row order)."""
    if len(ranked.scores) == 0:
        return None
    return _reliability_of(_bins_ranked(ranked, targets, bins))


def _reliability_sorted(ranked: Ranked, t: np.ndarray, bins: int) -> dict | None:
    """`reliability_ranked` from the targets in the ranking's order."""
    return _reliability_of(_bins_sorted(ranked, t, bins)) if len(t) else None


def _reliability_of(parts: list[tuple[np.ndarray, np.ndarray]]) -> dict:
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
    labels = np.asarray(labels)
    true_entire = None
    if true_cond is not None:
        true_entire = np.cumprod(np.asarray(true_cond, np.float64), axis=1)

    def one_key(key: str, k: int, kind: str) -> dict:
        column = (cond_probs if kind == "conditional" else entire_probs)[:, k]
        rows = labels[:, k - 1] > 0.5 if kind == "conditional" and k > 0 else None
        whole = None  # the ranking of the whole column, where a metric reads every row
        if rows is None:
            ranked = whole = rank(column)
            q, y = column, labels[:, k]
        else:  # scored on the rows that reached stage k - 1 (funnel_scores' rows)
            q, y = column[rows], labels[rows, k]
            if true_cond is None:
                ranked = rank(q)
            else:
                whole = rank(column)
                ranked = subset_ranked(whole, rows)
        ys = ranked.take(y)  # the labels in score order: one gather for auc and the bins
        fields = {
            "auc": _auc_sorted(ranked, ys),
            "nll": nll(BinaryScores(q, y)),
            "rows": len(y),
            "positives": int(np.sum(y)),
            "reliability": _reliability_sorted(ranked, ys.astype(np.float64), CALIBRATION_BINS),
        }
        fields["ece"] = ece_of(fields["reliability"])
        truth_k = None if true_cond is None else true_cond[:, k]
        if rows is not None:
            fields["selection_gap"] = selection_gap(column, rows, truth_k)
        if true_cond is None:
            return fields
        p = true_entire[:, k] if kind == "entire" else truth_k if rows is None else truth_k[rows]
        fields["soft_auc"] = soft_auc_ranked(ranked, p)
        fields["excess_nll"] = excess_nll(q, p)
        fields["ece_true"] = ece_of(reliability_ranked(ranked, p, CALIBRATION_BINS))
        fields["mae_true"] = mae(q, p)
        fields["rmse_true"] = rmse(q, p)
        if rows is not None:
            fields["soft_auc_all"] = soft_auc_ranked(whole, truth_k)
            fields["excess_nll_all"] = excess_nll(column, truth_k)
            fields["mae_true_all"] = mae(column, truth_k)
        return fields

    keys = metric_keys(stage_names)
    workers = max(1, min(len(keys), os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:  # numpy's sorts and reductions release the GIL
        done = list(pool.map(lambda key: one_key(*key), keys))
    return {key: fields for (key, _, _), fields in zip(keys, done, strict=True)}
