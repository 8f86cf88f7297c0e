"""Named model variants and the bridge from config to a static `ModelSpec`.

A variant is a function from the experiment's searched-model config to the config of the
model to train, so every baseline shares the searched model's embedding size and towers and
differs only in its edges. To add a model, register one function in `VARIANTS`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from autoheri_jax.config import ModelConfig
from autoheri_jax.model.edges import Edge, candidate_edges
from autoheri_jax.model.network import ModelSpec


def _esmm(m: ModelConfig) -> ModelConfig:
    return dataclasses.replace(m, edge_mode="none", searched=False, fixed_edges=())


def _all_on(mode: str) -> Callable[[ModelConfig], ModelConfig]:
    def variant(m: ModelConfig) -> ModelConfig:
        return dataclasses.replace(m, edge_mode=mode, searched=False, fixed_edges=())

    return variant


VARIANTS: dict[str, Callable[[ModelConfig], ModelConfig]] = {
    "esmm": _esmm,  # independent towers over a shared embedding, entire-space loss
    "parallel_all_on": _all_on("parallel"),  # every same-depth edge on, no search
    "hierarchical_all_on": _all_on("hierarchical"),  # every edge on, no search
}


def derived_model(m: ModelConfig, kept: Sequence[Edge]) -> ModelConfig:
    """The discrete architecture found by the search, as a fixed, unsearched model."""
    return dataclasses.replace(
        m, edge_mode="fixed", searched=False, fixed_edges=tuple(e.name for e in kept)
    )


def build_spec(
    m: ModelConfig,
    vocab_sizes: Sequence[int],
    num_dense: int,
    num_tasks: int,
    bag_vocab_sizes: Sequence[int] = (),
) -> ModelSpec:
    edges = candidate_edges(m.edge_mode, num_tasks, len(m.hidden), m.edge_pairs, m.fixed_edges)
    return ModelSpec(
        vocab_sizes=tuple(int(v) for v in vocab_sizes),
        num_dense=num_dense,
        num_tasks=num_tasks,
        embed_dim=m.embed_dim,
        hidden=m.hidden,
        edges=edges,
        searched=m.searched,
        activation=m.activation,
        dropout=m.dropout,
        detach_upstream=m.detach_upstream,
        init_edge_logit=m.init_edge_logit,
        embed_init_scale=m.embed_init_scale,
        bag_vocab_sizes=tuple(int(v) for v in bag_vocab_sizes),
        bag_pooling=m.bag_pooling,
        bag_value_weighted=m.bag_value_weighted,
    )
