"""Validated selection: the masked search's last step, a choice among retrained architectures.

The per-edge evidence (evidence.py) asks of each edge whether switching it lowers a validation
loss of the one supernet. It cannot see edges that help only as a group (in the cascade world
every edge delivers the same quantity, so no single edge clears a per-edge threshold), so the
masked search ends with a small, fixed comparison: the candidates

  none      independent towers (ESMM),
  evidence  the edges the per-edge evidence kept (left out when empty or every edge),
  all       every candidate edge,

retrained from one fresh initial state with the retrain budget, in one vmapped batch
(train/arch_batch.py: the same batches in the same order, common random numbers), and scored
on the validation split by `edge_search.select`. The batch is the retrain's TrainConfig, seed
included, so its lanes are the retrain's models (none = ESMM, all = every edge on, the chosen
one = the derived model): experiment.save_lane_models saves them, and they are not retrained.

The decision knows its noise: the candidates are taken fewest edges first; a candidate with
more edges replaces the current choice only when it is better at one-sided p < alpha / (A - 1)
(A = the candidates with a finite score, Bonferroni), p from DeLong's paired test of two AUCs
on the same validation rows (`delong_paired`). A difference inside the noise keeps the simpler
architecture; a NaN score never wins. What the test covers: the sampling noise of the
validation rows, with both candidates' scores on the same rows. What it does not: the noise of
retraining (another seed would train other weights); common random numbers make the two
candidates' retraining noise largely shared, but not all of it.

ctcvr_auc  exact AUC of pCTCVR (the product of every stage's probability) against the last
           stage's label over every validation impression. A ranking criterion is unchanged by
           any monotone recalibration of the score, so the calibration common mode that drives
           the losses (search/evidence.py) cannot enter it.
cvr_auc    exact AUC of the last stage's own (post-click) probability against its label over
           the rows whose previous stage is positive (the clicked rows, where that label is
           observed). The edges change only the downstream towers' predictions, and this
           ranks those alone; pCTCVR's ranking is dominated by pCTR, which the edges do not
           change (at 4M rows a +0.009 cvr* gain moved the test ctcvr AUC by 0.0014). It
           sees the clicked rows only: a gain on the rows nobody clicked is invisible to it.
Shapes: masks A x E; logits A x N x T; labels N x T (cumulative).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np
from scipy import stats

from autoheri_jax.config import ConfigError, TrainConfig
from autoheri_jax.data.dataset import CTRDataset
from autoheri_jax.metrics import BinaryScores, auc
from autoheri_jax.model.spec import ModelSpec, Params
from autoheri_jax.search.records import Comparison, ScoredCandidate, Selection
from autoheri_jax.train.arch_batch import architecture_logits, train_architectures
from autoheri_jax.train.loop import Resumable, fingerprint


def candidate_masks(kept: np.ndarray) -> tuple[list[str], np.ndarray]:
    """(names, float32 [A, E] masks) of the candidates in the module docstring, fewest edges
    first, from the evidence's kept [E] bool."""
    kept = np.asarray(kept, bool)
    names, masks = ["none"], [np.zeros_like(kept)]
    if 0 < kept.sum() < kept.size:
        names.append("evidence")
        masks.append(kept)
    names.append("all")
    masks.append(np.ones_like(kept))
    return names, np.stack(masks).astype(np.float32)


ALPHA = 0.05  # one-sided level a candidate with more edges must clear (before Bonferroni)
POWER = 0.8  # the power at which a comparison's detectable difference is stated


def _entire(logits: np.ndarray) -> np.ndarray:
    """[A, N] entire-space last-stage probability (the product of every stage's)."""
    return np.prod(1.0 / (1.0 + np.exp(-np.asarray(logits, np.float64))), axis=-1)


def _no_auc(rows: str, y: np.ndarray, criterion: str) -> ConfigError:
    return ConfigError(
        f"validated selection: the {len(y)} validation {rows} have no "
        f"{'positive' if y.size == 0 or y.max() == 0 else 'negative'} last-stage label, so "
        f"{criterion} cannot score the candidates; use more validation rows "
        "(data.valid_fraction, or prepare --valid-fraction for a store) "
        "or set edge_search.select=off"
    )


def ranked_rows(criterion: str, logits: np.ndarray, labels: np.ndarray):
    """(scores [A, N'], labels [N']) that `criterion` ranks, from logits [A, N, T] and
    labels [N, T]: every row and pCTCVR for ctcvr_auc; the rows whose previous stage is
    positive and the last stage's logit for cvr_auc. ConfigError when the ranked rows'
    labels are all equal (no AUC) or cvr_auc meets a one-stage model."""
    labels = np.asarray(labels)
    if criterion == "ctcvr_auc":
        y = labels[:, -1]
        if y.min() == y.max():
            raise _no_auc("rows", y, criterion)
        return _entire(logits), y
    if criterion == "cvr_auc":
        if labels.shape[1] < 2:
            raise ConfigError(
                "validated selection: select=cvr_auc needs two or more stages (it ranks the "
                "last stage on the rows whose previous stage is positive); use ctcvr_auc"
            )
        rows = labels[:, -2] > 0.5
        y = labels[rows, -1]
        if y.size == 0 or y.min() == y.max():
            raise _no_auc("rows with a positive previous stage", y, criterion)
        return np.asarray(logits, np.float64)[:, rows, -1], y
    raise ValueError(f"unknown selection criterion {criterion!r}; one of {tuple(SCORES)}")


def criterion_auc(criterion: str, logits: np.ndarray, labels: np.ndarray) -> list[float]:
    """[A] exact AUC of each architecture under `criterion` (`ranked_rows`)."""
    scores, y = ranked_rows(criterion, logits, labels)
    return [float(auc(BinaryScores(s, y))) for s in scores]


def ctcvr_auc(logits: np.ndarray, labels: np.ndarray) -> list[float]:
    """[A] exact AUC of each architecture's entire-space last-stage probability, from logits
    [A, N, T] and labels [N, T]; ConfigError when the last stage's labels are all equal."""
    return criterion_auc("ctcvr_auc", logits, labels)


def cvr_auc(logits: np.ndarray, labels: np.ndarray) -> list[float]:
    """[A] exact AUC of each architecture's last-stage probability on the rows whose
    previous stage is positive; ConfigError when those rows' labels are all equal."""
    return criterion_auc("cvr_auc", logits, labels)


def _placements(scores: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DeLong's structural components of one score: per positive the share of negatives it
    outranks, per negative the share of positives that outrank it (ties count half)."""
    pos, neg = scores[positive], scores[~positive]
    ranks = stats.rankdata(scores)  # midranks: ties count half
    v10 = (ranks[positive] - stats.rankdata(pos)) / len(neg)
    v01 = 1.0 - (ranks[~positive] - stats.rankdata(neg)) / len(pos)
    return v10, v01


def delong_paired(a: np.ndarray, b: np.ndarray, y: np.ndarray) -> dict:
    """DeLong's test of AUC(a) - AUC(b) for two scores of the same rows with labels y (0/1):
    -> {"diff", "se", "z", "p"}, p the one-sided p-value of "a ranks better than b". The
    variance of the difference comes from each row's placement under both scores, so what
    the two share (the same rows, the same hard cases) cancels."""
    positive = np.asarray(y) > 0.5
    m, n = int(positive.sum()), int((~positive).sum())
    if m < 2 or n < 2:
        return {"diff": math.nan, "se": math.nan, "z": math.nan, "p": math.nan}
    (a10, a01), (b10, b01) = (_placements(np.asarray(s, np.float64), positive) for s in (a, b))
    diff = float(a10.mean() - b10.mean())
    var = np.var(a10 - b10, ddof=1) / m + np.var(a01 - b01, ddof=1) / n
    se = float(math.sqrt(max(var, 0.0)))
    tie = 0.0 if diff == 0.0 else math.copysign(math.inf, diff)
    z = diff / se if se > 0.0 else tie
    return {"diff": diff, "se": se, "z": z, "p": float(stats.norm.sf(z))}


def detectable_difference(se: float, level: float, power: float = POWER) -> float:
    """The true AUC difference a one-sided test at `level` with standard error `se` detects
    with probability `power` (normal approximation): (z_{1-level} + z_{power}) x se."""
    return float((stats.norm.isf(level) + stats.norm.ppf(power)) * se)


def choose(
    scores: list[float],
    edge_counts: list[int],
    p_better: Callable[[int, int], float],
    alpha: float = ALPHA,
) -> tuple[int, list[dict]]:
    """(index of the chosen candidate, the comparisons made) by the module docstring's rule.

    Candidates are taken by edge count, fewest first; of several with one count (the ablation
    search's "each edge alone") the best-scored one is compared. p_better(a, b): one-sided
    p-value that candidate a scores better than b; the level is alpha / (finite candidates -
    1) whatever the comparisons made, so picking the best of a group is paid for. Candidates
    with a NaN score are never chosen; with none finite, ValueError."""
    finite = [a for a in range(len(scores)) if math.isfinite(scores[a])]
    if not finite:
        raise ValueError(f"validated selection: no candidate has a finite score ({scores})")
    groups: dict[int, list[int]] = {}
    for a in finite:
        groups.setdefault(edge_counts[a], []).append(a)
    leaders = [max(groups[c], key=lambda a: scores[a]) for c in sorted(groups)]
    best, comparisons = leaders[0], []
    level = alpha / max(len(finite) - 1, 1)
    for a in leaders[1:]:
        p = float(p_better(a, best))
        wins = p < level and scores[a] > scores[best]
        comparisons.append(
            {"candidate": a, "against": best, "p": p, "level": level, "wins": bool(wins)}
        )
        if wins:
            best = a
    return best, comparisons


SCORES = {"ctcvr_auc": ctcvr_auc, "cvr_auc": cvr_auc}  # criterion -> [A], higher is better


def selection_fingerprint(spec: ModelSpec, tcfg: TrainConfig, kept: np.ndarray) -> dict:
    """What a checkpoint of the candidates' batch must match to be resumed."""
    return fingerprint(spec, tcfg, candidate_masks(kept)[1])


def judge(
    names: list[str], masks: np.ndarray, logits: np.ndarray, labels: np.ndarray, criterion: str
) -> tuple[Selection, np.ndarray]:
    """Scores retrained candidates ([A, N, T] validation `logits` of `masks` [A, E]) and
    chooses one by the module docstring's rule. -> (the Selection record: scores, comparisons
    with each one's `detectable` difference at 80% power (`detectable_difference`), the
    choice; the chosen mask as [E] bool). labels [N, T]; ConfigError when the last stage's
    labels are all equal (no AUC)."""
    ranked, y = ranked_rows(criterion, logits, labels)
    scores = [float(auc(BinaryScores(r, y))) for r in ranked]
    tests: dict[tuple[int, int], dict] = {}

    def p_better(a: int, b: int) -> float:
        tests[a, b] = delong_paired(ranked[a], ranked[b], y)
        return tests[a, b]["p"]

    counts = [int(m.sum()) for m in masks]
    best, comparisons = choose(scores, counts, p_better)
    made = []
    for c in comparisons:  # names and the paired test's figures, for the record
        t = tests[c["candidate"], c["against"]]
        made.append(
            Comparison(
                candidate=names[c["candidate"]],
                against=names[c["against"]],
                diff=t["diff"],
                se=t["se"],
                p=c["p"],
                level=c["level"],
                detectable=detectable_difference(t["se"], c["level"]),
                wins=c["wins"],
            )
        )
    record = Selection(
        criterion=criterion,
        test="DeLong paired AUC test, one-sided, Bonferroni over the candidates",
        alpha=ALPHA,
        positives=int(y.sum()),
        candidates=tuple(
            ScoredCandidate(name=n, edges=c, score=s)
            for n, c, s in zip(names, counts, scores, strict=True)
        ),
        comparisons=tuple(made),
        chosen=names[best],
    )
    return record, np.asarray(masks[best]).astype(bool)


@dataclasses.dataclass(frozen=True)
class LaneBatch:
    """The trained candidates of one architecture batch: lane names, masks [A, E] of the
    supernet `spec`, the A-leading trained params and the batch's training stats. A lane is
    the model with its mask's edges trained under the batch's TrainConfig (model/projection.py
    cuts it out; experiment.py saves lanes as the models a run would otherwise retrain)."""

    spec: ModelSpec
    tcfg: TrainConfig
    batch: str  # "selection" or "ablation": which search step trained the lanes
    names: list[str]
    masks: np.ndarray
    params: Params
    stats: dict


def retrain_and_judge(
    spec: ModelSpec,
    tcfg: TrainConfig,
    train: CTRDataset,
    valid: CTRDataset,
    names: list[str],
    masks: np.ndarray,
    criterion: str,
    eval_batch_size: int,
    desc: str,
    resumable: Resumable | None = None,
    batch: str = "selection",
    **train_kw,
) -> tuple[Selection, np.ndarray, LaneBatch]:
    """Retrains `masks` [A, E] of the unsearched supernet `spec` under `tcfg` from one initial
    state in one vmapped batch and `judge`s them on `valid`; `resumable` checkpoints the batch
    so a stopped run resumes; `train_kw` (on_log, on_resume, progress) go to the trainer.
    -> (`judge`'s Selection and chosen [E] bool mask, the trained lanes)."""
    state, stats = train_architectures(
        spec, tcfg, train, masks, desc=desc, resumable=resumable, valid=valid, **train_kw
    )
    logits = architecture_logits(spec, state.params, masks, valid, eval_batch_size)
    judged, kept = judge(names, masks, logits, np.asarray(valid.labels), criterion)
    return (
        judged,
        kept,
        LaneBatch(
            spec, tcfg, batch, list(names), np.asarray(masks, np.float32), state.params, stats
        ),
    )


def select_architecture(
    spec: ModelSpec,
    tcfg: TrainConfig,
    train: CTRDataset,
    valid: CTRDataset,
    kept: np.ndarray,
    criterion: str,
    eval_batch_size: int,
    resumable: Resumable | None = None,
    **train_kw,
) -> tuple[Selection, np.ndarray, LaneBatch]:
    """The masked search's last step: the candidates of `kept` (none, evidence, all) retrained
    under `tcfg` (the retrain's settings) and judged on `valid` -> (`judge`'s Selection and
    chosen [E] bool mask, the trained lanes)."""
    names, masks = candidate_masks(kept)
    return retrain_and_judge(
        spec,
        tcfg,
        train,
        valid,
        names,
        masks,
        criterion,
        eval_batch_size,
        "search:select",
        resumable,
        **train_kw,
    )
