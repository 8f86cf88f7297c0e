"""The bridge from a `ModelConfig` (and the data's vocabularies) to a static `ModelSpec`."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from autoheri_jax.model import families
from autoheri_jax.model.config import FAMILY_SETTINGS, ModelConfig
from autoheri_jax.model.edges import Edge, candidate_edges, parse_edge, split_edge_op
from autoheri_jax.model.spec import ModelSpec
from autoheri_jax.settings import ConfigError


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
    *,
    searched: bool = False,
) -> ModelSpec:
    """The spec of model `m` on data of these shapes: vocab_sizes / bag_vocab_sizes, the rows
    of each single-valued / bag field; num_dense, the dense features; num_tasks, the funnel's
    stages T.

    searched=True gives every candidate edge a learned gate (the supernet of a gated one-shot
    search: edge logits, and operator logits under aggregation "search", in the arch
    partition); False keeps every edge of the spec on. Raises ConfigError for a family that
    cannot read this many stages and for aggregation "search" without gates."""
    if m.aggregation == "search" and not searched and m.edge_mode != "none":
        raise ConfigError(
            "model.aggregation='search' learns each edge's operator in the arch partition: it "
            "needs a gated search (edge_search.method=gradient or paper)"
        )
    if m.edge_mode == "random":
        edges = random_edges(
            num_tasks, len(m.hidden), m.edge_pairs, m.random_edge_prob, m.random_seed
        )
    else:
        names = tuple(split_edge_op(e)[0] for e in m.fixed_edges)
        edges = candidate_edges(m.edge_mode, num_tasks, len(m.hidden), m.edge_pairs, names)
    info = families.FAMILIES.get(m.family)  # None: autoheri, network.py's own towers
    stages = info.stages if info is not None else ()
    if stages and num_tasks not in stages:
        raise ConfigError(
            f"model.family={m.family!r} needs a funnel of {' or '.join(map(str, stages))} "
            f"stages; the data has {num_tasks} (esm2 reads click -> action -> purchase: use "
            "data.num_stages=3 on the simulator, or leave it out of `baselines`)"
        )
    return ModelSpec(
        model=spec_settings(m),
        vocab_sizes=tuple(int(v) for v in vocab_sizes),
        num_dense=num_dense,
        num_tasks=num_tasks,
        edges=edges,
        bag_vocab_sizes=tuple(int(v) for v in bag_vocab_sizes),
        edge_ops=_fixed_edge_ops(m, edges) if m.edge_mode == "fixed" else (),
        output=info.output if info is not None else "conditional",
        searched=searched,
    )


def spec_settings(m: ModelConfig) -> ModelConfig:
    """`m` as its spec holds it: every other family's own settings at their defaults and a
    baseline family's aggregation "concat" (only AutoHERI's towers aggregate edges), so
    unrelated settings never split a jit cache, a group of vmapped seeds or a checkpoint.
    Of the edge choice (whose result is the spec's `edges`) edge_mode and fixed_edges stay
    (ModelConfig validates them against the family), and the random draw's inputs only
    under edge_mode "random"."""
    own = set(FAMILY_SETTINGS[m.family])
    reset = {f for fields in FAMILY_SETTINGS.values() for f in fields} - own
    defaults = ModelConfig()
    # the edge choice: its result is the spec's `edges`; the rule's inputs that cannot change
    # them any more go too (a random_mask baseline's per-seed random_seed on an ESMM spec)
    reset |= {"edge_pairs"} | (
        {"random_edge_prob", "random_seed"} if m.edge_mode != "random" else set()
    )
    changes = {k: getattr(defaults, k) for k in reset}
    if m.family != "autoheri":
        changes["aggregation"] = "concat"
    return dataclasses.replace(m, **changes)
