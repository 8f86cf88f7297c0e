"""The edge-search methods, one module each (masked, gradient, paper, ablation), registered
here by their `edge_search.method` tag. A new method is its config class in method_config.py
(its settings, validated without jax) and its module here (a `SearchMethod`: the supernet it
trains and how it derives the architecture), plus its test."""

from __future__ import annotations

from autoheri_jax.config import Config
from autoheri_jax.method_config import METHOD_CONFIGS
from autoheri_jax.search.methods import ablation, gradient, masked, paper
from autoheri_jax.search.methods.base import SearchMethod

METHODS: dict[str, SearchMethod] = {
    m.METHOD.name: m.METHOD for m in (masked, gradient, paper, ablation)
}
if set(METHODS) != set(METHOD_CONFIGS):  # a config class without its module, or the reverse
    raise AssertionError(f"search methods {sorted(METHODS)} != configs {sorted(METHOD_CONFIGS)}")


def method_of(cfg: Config) -> SearchMethod:
    """The run's search method (`cfg.edge_search.method`)."""
    return METHODS[cfg.edge_search.method]


__all__ = ["METHODS", "SearchMethod", "method_of"]
