"""The bridge from a `ModelConfig` (and the data's vocabularies) to a static `ModelSpec`."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from autoheri_jax.config import ConfigError, ModelConfig
from autoheri_jax.model import families
from autoheri_jax.model.edges import Edge, candidate_edges, parse_edge, split_edge_op
from autoheri_jax.model.spec import ModelSpec

# The ModelConfig fields each family reads; the others stay at their ModelSpec defaults, so a
# family's spec (its jit cache key and checkpoint fingerprint) ignores unrelated settings.
_FAMILY_FIELDS: dict[str, tuple[str, ...]] = {
    "autoheri": (),
    "shared_bottom": ("bottom_hidden", "tower_hidden"),
    "mmoe": ("num_experts", "expert_hidden", "tower_hidden"),
    "ple": ("levels", "task_experts", "shared_experts", "expert_hidden", "tower_hidden"),
    "aitm": ("aitm_constraint_weight",),
    "dbmtl": ("bottom_hidden", "tower_hidden"),
    "gmsl": (),
    "esm2": (),
    "multi_dr": ("propensity_clip", "imputation_weight"),
    "escm2_ips": ("propensity_clip", "escm2_counterfactual_weight", "escm2_ctcvr_weight"),
    "escm2_dr": ("propensity_clip", "escm2_counterfactual_weight", "escm2_ctcvr_weight"),
    "dcmt": ("propensity_clip", "dcmt_constraint_weight"),
}


def _fixed_edge_ops(m: ModelConfig, edges: Sequence[Edge]) -> tuple[str, ...]:
    """Per-edge operators from "u.i->d.j:op" entries (others take m.aggregation); () if none."""
    ops: dict[Edge, str] = {}
    for text in m.fixed_edges:
        name, op = split_edge_op(text)  # ModelConfig has checked the suffix
        if op is not None:
            ops[parse_edge(name)] = op
    if not ops:
        return ()
    return tuple(ops.get(e, m.aggregation) for e in edges)


def random_edges(
    num_tasks: int, num_layers: int, pairs: str, prob: float, seed: int
) -> tuple[Edge, ...]:
    """Each hierarchical candidate kept independently with probability `prob`, from `seed`.

    Deterministic in (candidates, prob, seed); the result keeps the candidates' order.
    """
    candidates = candidate_edges("hierarchical", num_tasks, num_layers, pairs)
    keep = np.random.default_rng(seed).random(len(candidates)) < prob
    return tuple(e for e, k in zip(candidates, keep, strict=True) if k)


def build_spec(
    m: ModelConfig,
    vocab_sizes: Sequence[int],
    num_dense: int,
    num_tasks: int,
    bag_vocab_sizes: Sequence[int] = (),
) -> ModelSpec:
    if m.edge_mode == "random":
        edges = random_edges(
            num_tasks, len(m.hidden), m.edge_pairs, m.random_edge_prob, m.random_seed
        )
    else:
        names = tuple(split_edge_op(e)[0] for e in m.fixed_edges)
        edges = candidate_edges(m.edge_mode, num_tasks, len(m.hidden), m.edge_pairs, names)
    family = {k: getattr(m, k) for k in _FAMILY_FIELDS[m.family]}
    stages = families.FAMILIES[m.family].stages if m.family != "autoheri" else ()
    if stages and num_tasks not in stages:
        raise ConfigError(
            f"model.family={m.family!r} needs a funnel of {' or '.join(map(str, stages))} "
            f"stages; the data has {num_tasks} (esm2 reads click -> action -> purchase: use "
            "data.num_stages=3 on the simulator, or leave it out of `baselines`)"
        )
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
        edge_logit_noise=m.edge_logit_noise,
        edge_init=m.edge_init,
        embed_init_scale=m.embed_init_scale,
        bag_vocab_sizes=tuple(int(v) for v in bag_vocab_sizes),
        bag_pooling=m.bag_pooling,
        bag_value_weighted=m.bag_value_weighted,
        family=m.family,
        aggregation=m.aggregation if m.family == "autoheri" else "concat",
        edge_ops=_fixed_edge_ops(m, edges) if m.edge_mode == "fixed" else (),
        **family,
    )
