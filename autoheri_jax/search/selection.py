"""Validated selection: the masked search's last step, a choice among retrained architectures.

The per-edge evidence (evidence.py) asks of each edge whether switching it lowers a validation
loss of the one supernet. The ground truth (experiments/ground_truth.py, experiments/README.md)
showed two things that step cannot see: in a world where the stages share a representation the
edges are interchangeable (each alone adds most of what all add, no drop-one value differs from
0), so no single edge clears a per-edge threshold although edges as a group help; and the
entire-space losses rank retrained architectures against the truth no better than chance there
(Kendall tau near 0), while the ranking criteria do (ctcvr AUC and the IPS post-click loss, the
only two with a positive tau in both worlds).

So the masked search ends with a small, fixed comparison made the way a practitioner would
make it: the candidates

  none      independent towers (ESMM),
  evidence  the edges the per-edge evidence kept (left out when empty or every edge),
  all       every candidate edge,

are retrained from one fresh initial state with the retrain budget, in one vmapped batch
(train/arch_batch.py: the same batches in the same order, common random numbers), and scored
on the validation split by `edge_search.select`. The best score wins; a tie goes to fewer edges
(a candidate with more edges must be strictly better to be chosen).

ctcvr_auc  exact AUC of pCTCVR (the product of every stage's probability) against the last
           stage's label over every validation impression. A ranking criterion is unchanged by
           any monotone recalibration of the score, so the calibration common mode that drives
           the losses (search/evidence.py) cannot enter it; it was chosen over the IPS loss on
           that argument before any study of this step ran.
Shapes: masks A x E; logits A x N x T; labels N x T (cumulative).
"""

from __future__ import annotations

import numpy as np

from autoheri_jax.config import ConfigError, TrainConfig
from autoheri_jax.data.dataset import CTRDataset
from autoheri_jax.metrics import BinaryScores, auc
from autoheri_jax.model.spec import ModelSpec
from autoheri_jax.train.arch_batch import architecture_logits, train_architectures
from autoheri_jax.train.loop import Resumable, fingerprint


def candidate_masks(kept: np.ndarray) -> tuple[list[str], np.ndarray]:
    """(names, [A, E] masks) of the candidates in the module docstring, fewest edges first."""
    kept = np.asarray(kept, bool)
    names, masks = ["none"], [np.zeros_like(kept)]
    if 0 < kept.sum() < kept.size:
        names.append("evidence")
        masks.append(kept)
    names.append("all")
    masks.append(np.ones_like(kept))
    return names, np.stack(masks).astype(np.float32)


def ctcvr_auc(logits: np.ndarray, labels: np.ndarray) -> list[float]:
    """[A] exact AUC of each architecture's entire-space last-stage probability."""
    z = np.asarray(logits, np.float64)
    entire = np.prod(1.0 / (1.0 + np.exp(-z)), axis=-1)  # A x N
    y = np.asarray(labels)[:, -1]
    if y.min() == y.max():  # AUC is undefined: nothing can rank the candidates
        raise ConfigError(
            f"validated selection: the {len(y)} validation rows have no "
            f"{'positive' if y.max() == 0 else 'negative'} last-stage label, so ctcvr_auc "
            "cannot score the candidates; use more validation rows (data.valid_fraction, or "
            "prepare --valid-fraction for a store) "
            "or set edge_search.select=off"
        )
    return [float(auc(BinaryScores(p, y))) for p in entire]


SCORES = {"ctcvr_auc": ctcvr_auc}  # criterion -> (logits, labels) -> [A], higher is better


def selection_fingerprint(spec: ModelSpec, tcfg: TrainConfig, kept: np.ndarray) -> dict:
    """What a checkpoint of the candidates' batch must match to be resumed."""
    return fingerprint(spec, tcfg, candidate_masks(kept)[1])


def choose(scores: list[float], edge_counts: list[int]) -> int:
    """Index of the best score; a tie goes to the candidate with fewer edges."""
    order = sorted(range(len(scores)), key=lambda a: edge_counts[a])
    best = order[0]
    for a in order[1:]:
        if scores[a] > scores[best]:
            best = a
    return best


def select_architecture(
    spec: ModelSpec,
    tcfg: TrainConfig,
    train: CTRDataset,
    valid: CTRDataset,
    kept: np.ndarray,
    criterion: str,
    eval_batch_size: int,
    resumable: Resumable | None = None,
) -> dict:
    """Retrains the candidates of `kept` under `tcfg` (the retrain's settings) and picks one by
    `criterion` on `valid`. -> {"criterion", "candidates": [{name, edges, score}], "chosen",
    "kept": [E] bool} (no wall time: a record is the same however the run was split).
    `spec` is the unsearched supernet (every edge mask-gated); `resumable` (its fingerprint
    from `selection_fingerprint`) checkpoints the candidates' batch so a stopped run resumes."""
    names, masks = candidate_masks(kept)
    state, _ = train_architectures(
        spec, tcfg, train, masks, desc="search:select", resumable=resumable
    )
    logits = architecture_logits(spec, state.params, masks, valid, eval_batch_size)
    scores = SCORES[criterion](logits, np.asarray(valid.labels))
    counts = [int(m.sum()) for m in masks]
    best = choose(scores, counts)
    return {
        "criterion": criterion,
        "candidates": [
            {"name": n, "edges": c, "score": s}
            for n, c, s in zip(names, counts, scores, strict=True)
        ],
        "chosen": names[best],
        "kept": masks[best].astype(bool),
    }
