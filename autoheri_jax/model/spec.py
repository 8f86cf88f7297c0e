"""`ModelSpec`: the static structure of one model (every shape, hashable for `jit`).

A spec is the model's `ModelConfig` (the one place each setting is declared, with its comment
and validation) plus what comes from the data (vocabularies, dense width, tasks) and what
`build.py` derives from both (the candidate edges, their operators, the logit kind).
Families, losses, the search and the trainer all read a spec; it imports nothing of theirs, so
any of them can depend on it. `Params` is the plain dict pytree the pure functions share (its
layout: model/network.py).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import numpy as np

from autoheri_jax.model.edges import Edge, incoming

if TYPE_CHECKING:  # a spec holds a ModelConfig; an export's reader never builds one
    from autoheri_jax.model.config import ModelConfig

Params = dict


TABLE_ROW_MULTIPLE = 128  # padded table rows: any power-of-two device count <= 128 shards them

# ModelConfig fields that choose the candidate edges: the spec's `edges` (and `edge_ops`) hold
# their result, and code reads the edges, never the rule
EDGE_CHOICE_FIELDS = ("edge_mode", "edge_pairs", "fixed_edges", "random_edge_prob", "random_seed")


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """Static structure of one model: fixes every shape, hashable for `jit`.

    A model setting is read as `spec.model.<setting>` (embed_dim, hidden, family, dropout,
    ...); the spec forwards none of them, so what comes from the data and what from the
    config stay apart. build.build_spec resets the settings the model's family does not read,
    so a spec (a jit cache key, a checkpoint's fingerprint) ignores them; `with_model` changes
    settings (validated as any ModelConfig).
    """

    model: ModelConfig  # the model's settings as its family reads them
    vocab_sizes: tuple[int, ...]  # F single-valued fields' vocabularies (the data's)
    num_dense: int  # dense features per row (the data's)
    num_tasks: int  # T funnel stages (the data's)
    edges: tuple[Edge, ...]  # E candidate (searched) or kept (fixed) edges, in order
    bag_vocab_sizes: tuple[int, ...] = ()  # multi-valued fields' vocabularies (the data's)
    edge_ops: tuple[str, ...] = ()  # one op per edge (overrides `aggregation`); () = none
    # how logit t reads: "conditional" P(stage t | stage t-1) or "entire" P(stage t)
    # (families.FAMILIES records each family's kind)
    output: str = "conditional"
    # every edge has a learned gate (a gated search's supernet: params["arch"]); False: the
    # edges are fixed, on unless a step's mask turns them off (masked search, lanes)
    searched: bool = False

    def __post_init__(self):
        for name in ("vocab_sizes", "edges", "bag_vocab_sizes", "edge_ops"):  # hashable
            object.__setattr__(self, name, tuple(getattr(self, name)))

    def with_model(self, **settings: Any) -> ModelSpec:
        """This spec with model settings changed (e.g. dropout=0.5); the edges stay."""
        return dataclasses.replace(self, model=dataclasses.replace(self.model, **settings))

    def edge_op(self, k: int) -> str:
        """Operator of edge k: one of aggregation.AGGREGATIONS."""
        return self.edge_ops[k] if self.edge_ops else self.model.aggregation

    @property
    def searches_ops(self) -> bool:
        """Whether params["arch"]["op_logits"] exists (mixes every edge's operators)."""
        return self.has_arch and self.model.aggregation == "search" and not self.edge_ops

    @property
    def num_fields(self) -> int:
        return len(self.vocab_sizes) + len(self.bag_vocab_sizes)

    @property
    def input_dim(self) -> int:
        return self.num_fields * self.model.embed_dim + self.num_dense

    @property
    def num_edges(self) -> int:
        return len(self.edges)

    @property
    def has_arch(self) -> bool:
        """Whether params hold "arch" (edge logits): a searched spec with at least one edge."""
        return self.searched and self.num_edges > 0

    @property
    def vocab_rows(self) -> int:
        """Rows that fields use; the table has `table_rows` >= this (padding is never looked up)."""
        return sum(self.vocab_sizes) + sum(self.bag_vocab_sizes)

    @property
    def table_rows(self) -> int:
        """Rows of the embedding table: `vocab_rows` rounded up to TABLE_ROW_MULTIPLE."""
        return -(-self.vocab_rows // TABLE_ROW_MULTIPLE) * TABLE_ROW_MULTIPLE

    @property
    def field_offsets(self) -> np.ndarray:
        """First table row of every field: single-valued fields, then bag fields."""
        sizes = (*self.vocab_sizes, *self.bag_vocab_sizes)
        return np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int32)

    def layer_input_dims(self, task: int, layer: int) -> list[int]:
        """Row-block sizes of layer `layer`'s kernel in `task`: own input, then each edge
        whose operator is concat (or search), in edge order."""
        own = self.input_dim if layer == 0 else self.model.hidden[layer - 1]
        return [own] + [
            self.model.hidden[self.edges[k].src_layer]
            for k in incoming(self.edges, task, layer)
            if self.edge_op(k) in ("concat", "search")
        ]
