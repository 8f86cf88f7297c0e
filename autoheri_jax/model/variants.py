"""Named model variants: the models a config's `baselines` can list (build.py turns each into
a static `ModelSpec`).

A variant is a function from the experiment's searched-model config to the config of the
model to train, so every baseline shares the searched model's embedding size and towers and
differs only in its edges, or swaps the towers for another model family (families.py) over
the same embedding. Neither jax nor config is imported here, so config.py validates names
against this module without pulling in either. To add a model, register one function in `VARIANTS`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from autoheri_jax.model.edges import Edge

if TYPE_CHECKING:  # config.py checks baseline names against this module; model sits below it
    from autoheri_jax.model.config import ModelConfig


def _fixed_aggregation(m: ModelConfig) -> str:
    """An unsearched model's aggregation: a fixed operator carries over, "search" -> "concat"."""
    return "concat" if m.aggregation == "search" else m.aggregation


def _esmm(m: ModelConfig) -> ModelConfig:
    return dataclasses.replace(m, edge_mode="none", fixed_edges=(), aggregation="concat")


def _all_on(mode: str) -> Callable[[ModelConfig], ModelConfig]:
    def variant(m: ModelConfig) -> ModelConfig:
        return dataclasses.replace(
            m, edge_mode=mode, fixed_edges=(), aggregation=_fixed_aggregation(m)
        )

    return variant


def _family(name: str) -> Callable[[ModelConfig], ModelConfig]:
    def variant(m: ModelConfig) -> ModelConfig:
        return dataclasses.replace(_esmm(m), family=name)

    return variant


def _esmm_stacked(m: ModelConfig) -> ModelConfig:
    """ESMM's loss on the debiasing families' stacked towers (escm2_ips without its
    counterfactual term, CTCVR at weight 1): separates their loss from their implementation."""
    return dataclasses.replace(
        _family("escm2_ips")(m), escm2_counterfactual_weight=0.0, escm2_ctcvr_weight=1.0
    )


VARIANTS: dict[str, Callable[[ModelConfig], ModelConfig]] = {
    "esmm": _esmm,  # independent towers over a shared embedding, entire-space loss
    "parallel_all_on": _all_on("parallel"),  # every same-depth edge on, no search
    "hierarchical_all_on": _all_on("hierarchical"),  # every edge on, no search
    # a random hierarchical edge subset (model.random_edge_prob, model.random_seed), no search
    "random_mask": _all_on("random"),
    "shared_bottom": _family("shared_bottom"),  # shared MLP bottom, a small tower per task
    "mmoe": _family("mmoe"),  # multi-gate mixture of experts
    "ple": _family("ple"),  # progressive layered extraction (stacked CGC levels)
    "aitm": _family("aitm"),  # adaptive information transfer; entire-space outputs
    "dbmtl": _family("dbmtl"),  # deep Bayesian multi-target: stage t reads stage t-1's output
    "gmsl": _family("gmsl"),  # a GRU carries state from one funnel stage to the next
    "esm2": _family("esm2"),  # post-click decomposition (D-/O-Action paths); 3-stage funnels
    "multi_dr": _family("multi_dr"),  # doubly robust CVR risk with an imputation tower
    "escm2_ips": _family("escm2_ips"),  # ESMM + inverse-propensity counterfactual CVR risk
    "escm2_dr": _family("escm2_dr"),  # ESMM + doubly robust counterfactual CVR risk
    "dcmt": _family("dcmt"),  # factual + counterfactual CVR heads over the entire space
    "esmm_stacked": _esmm_stacked,  # ESMM's loss on the debiasing families' towers (a control)
}


def matched_random_edges(candidates: Sequence[Edge], count: int, seed: int) -> tuple[Edge, ...]:
    """`count` of `candidates` drawn uniformly without replacement from `seed`, in candidate
    order. Deterministic in (candidates, count, seed); ValueError unless 0 <= count <=
    len(candidates)."""
    if not 0 <= count <= len(candidates):
        raise ValueError(f"cannot draw {count} of {len(candidates)} candidate edges")
    pick = np.random.default_rng(seed).permutation(len(candidates))[:count]
    return tuple(candidates[i] for i in sorted(pick))


def _random_matched(
    m: ModelConfig, candidates: Sequence[Edge], kept: Sequence[Edge]
) -> ModelConfig:
    """As many edges as the search kept, drawn uniformly from the search's candidates
    (model.random_seed): the control that tells a searched choice from a lucky edge count."""
    edges = matched_random_edges(candidates, len(kept), m.random_seed)
    return dataclasses.replace(
        m,
        edge_mode="fixed",
        fixed_edges=tuple(e.name for e in edges),
        aggregation=_fixed_aggregation(m),
    )


# Variants that depend on the search's outcome: (searched-model config, candidate edges, kept
# edges) -> the config to train. Named in `baselines` like VARIANTS; built at retrain time.
ARCH_VARIANTS: dict[str, Callable[[ModelConfig, Sequence[Edge], Sequence[Edge]], ModelConfig]] = {
    "random_matched": _random_matched,  # a random mask with the searched edge count
}


def derived_model(
    m: ModelConfig, kept: Sequence[Edge], ops: Sequence[str | None] | None = None
) -> ModelConfig:
    """The discrete architecture found by the search, as a fixed, unsearched model.

    ops: each kept edge's operator (an operator search's argmax); the edges then read
    "u.i->d.j:op" and aggregation falls back to "concat" for none. Without ops a fixed
    aggregation carries over, and a searched one ("search") becomes "concat". ValueError
    when ops and kept differ in length.
    """
    names = [e.name for e in kept]
    if ops is not None:
        if len(ops) != len(kept):
            raise ValueError(f"{len(ops)} ops for {len(kept)} kept edges")
        names = [n if op is None else f"{n}:{op}" for n, op in zip(names, ops, strict=True)]
    return dataclasses.replace(
        m,
        edge_mode="fixed",
        fixed_edges=tuple(names),
        aggregation=_fixed_aggregation(m),
    )
