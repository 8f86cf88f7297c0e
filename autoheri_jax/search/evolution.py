"""Evolutionary search over edge masks: regularised (aging) evolution, a baseline for the
one-shot search.

A candidate is a 0/1 mask over the candidate edges of `cfg.model` (edge k of
`candidate_edges(...)` is on when mask[k] == 1). Scoring a candidate trains the fixed
architecture it names from fresh weights for a short budget (`cfg.retrain` with
`evolution.budget_epochs` epochs, optionally capped at `evolution.budget_steps` steps) and
computes `evolution.metric` on the VALIDATION split; the test split is never looked at.

Aging evolution (Real et al., 2019):

  1. draw `population` masks uniformly at random and score them;
  2. for `cycles` rounds: draw `sample` members of the population without replacement, take
     the best of them as the parent, flip each of its edges with probability `mutation_prob`
     (at least one edge always flips), score the child, append it and remove the OLDEST
     member (not the worst), so a mask stays only while its descendants keep winning;
  3. the answer is the best mask ever scored.

Everything is drawn from one `numpy.random.default_rng(evolution.seed)`, so a run is a pure
function of its config. Scores are cached per mask: a mask drawn again costs no training.
The log of scored candidates doubles as a resume file: rerunning `autoheri evolve` over the
same workdir replays the draws and takes the logged scores instead of retraining.

The workflow around it (scoring a mask by training it, the workdir's evolution.jsonl /
evolution.json, resuming) is autoheri_jax/evolution_run.py, beside experiment.py: this module
is the algorithm, a pure function of its scorer and settings.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from autoheri_jax.config import Config, ConfigError, EvolutionConfig, TrainConfig
from autoheri_jax.data.dataset import CTRDataset
from autoheri_jax.model.edges import Edge, candidate_edges

VALID_LOSS_METRIC = "neg_valid_loss"  # see config.EVOLUTION_METRICS

Mask = tuple[int, ...]

# ------------------------------------------------------------------------ the search itself


class Evaluation(NamedTuple):
    """One scored candidate of the search: its edge mask (E 0/1 bits), score and cost."""

    index: int  # 0-based order of evaluation
    cycle: int  # -1 for the initial population, else the cycle that made this child
    mask: Mask
    score: float | None  # None: the metric is undefined (a class absent from the split)
    steps: int  # train steps this evaluation cost (0 when cached)
    seconds: float  # wall seconds it cost (train + score; 0 when cached)
    cached: bool  # the mask had been scored before: no training


class SearchResult(NamedTuple):
    """`best`: the highest-scoring evaluation (the first of equals; a None score ranks
    lowest); `history`: every evaluation in order, cached repeats included."""

    best: Evaluation
    history: list[Evaluation]

    @property
    def trained(self) -> list[Evaluation]:
        return [e for e in self.history if not e.cached]


def mutate(parent: Mask, prob: float, rng: np.random.Generator) -> Mask:
    """Flips each bit with probability `prob`; when none flipped, one uniformly chosen bit."""
    n = len(parent)
    flips = rng.random(n) < prob
    if not flips.any():
        flips[rng.integers(n)] = True
    return tuple(int(b) ^ int(f) for b, f in zip(parent, flips, strict=True))


def _rank(score: float | None) -> float:
    return -np.inf if score is None else score


def aging_evolution(
    num_edges: int,
    score_fn: Callable[[Mask], tuple[float | None, dict]],
    cfg: EvolutionConfig,
    *,
    on_eval: Callable[[Evaluation], None] | None = None,
    known: Callable[[int, Mask], Evaluation | None] | None = None,
) -> SearchResult:
    """Runs aging evolution over masks of `num_edges` (E) 0/1 bits; -> SearchResult.

    `score_fn(mask) -> (score, {"steps": ..})`, higher is better (None: undefined, ranks
    lowest); a mask scored before is not scored again. ConfigError when E < 1.
    `known(index, mask)` may return an earlier run's evaluation of that index (resumption);
    it is then used instead of calling `score_fn`. `on_eval` sees every new evaluation.
    Ties between scores go to the earlier member (in sample order, or evaluation order).
    """
    if num_edges < 1:
        raise ConfigError("evolution: the model has no candidate edges to search over")
    rng = np.random.default_rng(cfg.seed)
    prob = cfg.mutation_prob or 1.0 / num_edges
    cache: dict[Mask, float | None] = {}
    history: list[Evaluation] = []

    def evaluate(mask: Mask, cycle: int) -> Evaluation:
        index = len(history)
        earlier = None if known is None else known(index, mask)
        if earlier is not None:
            ev = earlier
            cache.setdefault(mask, ev.score)
        elif mask in cache:
            ev = Evaluation(index, cycle, mask, cache[mask], 0, 0.0, True)
        else:
            t0 = time.perf_counter()
            score, info = score_fn(mask)
            ev = Evaluation(
                index,
                cycle,
                mask,
                score,
                int(info.get("steps", 0)),
                time.perf_counter() - t0,
                False,
            )
            cache[mask] = score
        history.append(ev)
        if on_eval is not None and earlier is None:
            on_eval(ev)
        return ev

    population: list[Evaluation] = []  # oldest first
    for _ in range(cfg.population):
        mask = tuple(int(b) for b in rng.integers(0, 2, num_edges))
        population.append(evaluate(mask, -1))
    for cycle in range(cfg.cycles):
        picks = rng.choice(len(population), size=cfg.sample, replace=False)
        parent = max((population[i] for i in picks), key=lambda e: _rank(e.score))
        child = evaluate(mutate(parent.mask, prob, rng), cycle)
        population.append(child)
        population.pop(0)  # the oldest dies, whatever its score
    best = max(history, key=lambda e: _rank(e.score))  # first of equals: max keeps the first
    return SearchResult(best, history)


# ---------------------------------------------------------------- scoring by short training


def search_edges(cfg: Config, num_tasks: int) -> tuple[Edge, ...]:
    """The E candidate edges the masks range over: those of the searched model's edge_mode
    over `num_tasks` towers; ConfigError unless the mode is parallel or hierarchical."""
    m = cfg.model
    if m.edge_mode not in ("parallel", "hierarchical"):
        raise ConfigError(
            "model.edge_mode: evolution searches parallel or hierarchical edges, "
            f"got {m.edge_mode!r}"
        )
    return candidate_edges(m.edge_mode, num_tasks, len(m.hidden), m.edge_pairs)


def budget_train_config(cfg: Config) -> TrainConfig:
    """Every candidate trains with the retrain settings for `budget_epochs` epochs."""
    return dataclasses.replace(cfg.retrain, epochs=cfg.evolution.budget_epochs)


def budget_train_rows(cfg: Config, train: CTRDataset) -> CTRDataset:
    """The training rows a candidate sees: all, or a prefix when budget_steps caps the steps."""
    ev, bs = cfg.evolution, cfg.retrain.batch_size
    if ev.budget_steps == 0:
        return train
    rows = max(1, ev.budget_steps // ev.budget_epochs) * bs
    return train if rows >= train.num_rows else train.take(slice(0, rows))


def mask_bits(mask: Mask) -> str:
    return "".join(str(b) for b in mask)
