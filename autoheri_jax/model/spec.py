"""`ModelSpec`: the static structure of one model (every shape, hashable for `jit`).

Families, losses, the search and the trainer all read a spec; it imports nothing of theirs, so
any of them can depend on it. `Params` is the plain dict pytree the pure functions share (its
layout: model/network.py).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from autoheri_jax.model.edges import Edge, incoming

# Families whose logit t is P(stage t) itself rather than P(stage t | stage t-1) (families.py).
ENTIRE_SPACE_FAMILIES = frozenset({"aitm", "esm2"})


Params = dict


TABLE_ROW_MULTIPLE = 128  # padded table rows: any power-of-two device count <= 128 shards them


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """Static structure of one model: fixes every shape, hashable for `jit`."""

    vocab_sizes: tuple[int, ...]
    num_dense: int
    num_tasks: int
    embed_dim: int
    hidden: tuple[int, ...]
    edges: tuple[Edge, ...]
    searched: bool
    activation: str = "relu"
    dropout: float = 0.0
    detach_upstream: bool = False
    init_edge_logit: float = 0.0
    edge_logit_noise: float = 0.0  # std of the starting arch logits' noise
    edge_init: str = "zero"  # "zero" | "block": how concat edge row blocks start
    embed_init_scale: float = 0.05
    bag_vocab_sizes: tuple[int, ...] = ()
    bag_pooling: str = "mean"  # "sum" | "mean" over a bag's entries
    bag_value_weighted: bool = False  # multiply each bag entry by its feature value
    # Baseline families (families.py); the fields a family does not use keep their defaults.
    family: str = "autoheri"  # autoheri or a key of families.FAMILIES
    bottom_hidden: tuple[int, ...] = (128, 64)  # shared_bottom: the shared MLP
    tower_hidden: tuple[int, ...] = (32,)  # shared_bottom, mmoe, ple: per-task tower widths
    num_experts: int = 4  # mmoe: experts
    expert_hidden: tuple[int, ...] = (64,)  # mmoe, ple: every expert's MLP widths
    levels: int = 2  # ple: CGC levels
    task_experts: int = 1  # ple: task-specific experts per task and level
    shared_experts: int = 1  # ple: shared experts per level
    aitm_constraint_weight: float = 0.6  # aitm: weight of the label-constraint calibrator
    # debiasing families (objectives.py): propensities are the model's own detached P(reach
    # stage k-1), clipped to [propensity_clip, 1 - propensity_clip]
    propensity_clip: float = 0.05
    escm2_counterfactual_weight: float = 0.5  # escm2_*: lambda_c
    escm2_ctcvr_weight: float = 0.5  # escm2_*: lambda_g
    imputation_weight: float = 1.0  # multi_dr: weight of the imputation loss
    dcmt_constraint_weight: float = 1e-3  # dcmt: weight of |1 - (r + r*)|
    aggregation: str = "concat"  # concat | gated_sum | attention | search (aggregation.py)
    edge_ops: tuple[str, ...] = ()  # one op per edge (overrides `aggregation`); () = none

    def edge_op(self, k: int) -> str:
        """Operator of edge k: one of aggregation.AGGREGATIONS."""
        return self.edge_ops[k] if self.edge_ops else self.aggregation

    @property
    def searches_ops(self) -> bool:
        """Whether params["arch"]["op_logits"] exists (mixes every edge's operators)."""
        return self.has_arch and self.aggregation == "search" and not self.edge_ops

    @property
    def output(self) -> str:
        """How to read logit t: "conditional" P(stage t | stage t-1), or "entire" P(stage t)."""
        return "entire" if self.family in ENTIRE_SPACE_FAMILIES else "conditional"

    @property
    def num_fields(self) -> int:
        return len(self.vocab_sizes) + len(self.bag_vocab_sizes)

    @property
    def input_dim(self) -> int:
        return self.num_fields * self.embed_dim + self.num_dense

    @property
    def num_edges(self) -> int:
        return len(self.edges)

    @property
    def has_arch(self) -> bool:
        return self.searched and self.num_edges > 0

    @property
    def vocab_rows(self) -> int:
        """Rows that fields use; the table has `table_rows` >= this (padding is never looked up)."""
        return sum(self.vocab_sizes) + sum(self.bag_vocab_sizes)

    @property
    def table_rows(self) -> int:
        return -(-self.vocab_rows // TABLE_ROW_MULTIPLE) * TABLE_ROW_MULTIPLE

    @property
    def field_offsets(self) -> np.ndarray:
        """First table row of every field: single-valued fields, then bag fields."""
        sizes = (*self.vocab_sizes, *self.bag_vocab_sizes)
        return np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int32)

    def layer_input_dims(self, task: int, layer: int) -> list[int]:
        """Row-block sizes of layer `layer`'s kernel in `task`: own input, then each edge
        whose operator is concat (or search), in edge order."""
        own = self.input_dim if layer == 0 else self.hidden[layer - 1]
        return [own] + [
            self.hidden[self.edges[k].src_layer]
            for k in incoming(self.edges, task, layer)
            if self.edge_op(k) in ("concat", "search")
        ]
