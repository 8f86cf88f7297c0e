"""The `model` section of a config: the family, the towers and the candidate edges of the model a
run searches (and, through model/variants.py, of every baseline). `config.Config` holds one;
model/build.py turns it and the data's shapes into a ModelSpec."""

from __future__ import annotations

import dataclasses

from autoheri_jax.model.edges import AGGREGATIONS, parse_edge
from autoheri_jax.model.edges import OPS as EDGE_OPS
from autoheri_jax.settings import ConfigError, check, check_types

EDGE_MODES = ("none", "parallel", "hierarchical", "fixed", "random")
_ESCM2 = ("propensity_clip", "escm2_counterfactual_weight", "escm2_ctcvr_weight")
# Every family by name with the settings only it reads (beyond the shared embed_dim, hidden,
# activation, dropout and bag settings; "autoheri", network.py's own towers, reads the edge
# settings). A run that moves one off its default with no model of a family that reads it is
# refused (config.Config); a spec resets the others (build.spec_settings). The functions are
# registered in model/families.py:FAMILIES.
FAMILY_SETTINGS: dict[str, tuple[str, ...]] = {
    "autoheri": (),
    "shared_bottom": ("bottom_hidden", "tower_hidden"),
    "mmoe": ("num_experts", "expert_hidden", "tower_hidden"),
    "ple": ("levels", "task_experts", "shared_experts", "expert_hidden", "tower_hidden"),
    "aitm": ("aitm_constraint_weight",),
    "dbmtl": ("bottom_hidden", "tower_hidden"),
    "gmsl": (),
    "esm2": (),
    "multi_dr": ("propensity_clip", "imputation_weight"),
    "escm2_ips": _ESCM2,
    "escm2_dr": _ESCM2,
    "dcmt": ("propensity_clip", "dcmt_constraint_weight"),
}
FAMILIES = tuple(FAMILY_SETTINGS)
EDGE_PAIRS = ("adjacent", "all")
ACTIVATIONS = ("relu", "gelu", "silu", "tanh")
BAG_POOLING = ("mean", "sum")
EDGE_INITS = ("zero", "block")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The model's settings, each explained where it is declared; ConfigError on construction
    for a value out of range or a fixed edge that does not fit `hidden`."""

    embed_dim: int = 16  # D of the shared field embeddings (B x F x D)
    hidden: tuple[int, ...] = (128, 64, 32)  # width of each hidden layer of every task tower
    activation: str = "relu"  # hidden-layer non-linearity
    dropout: float = 0.0  # dropout on hidden outputs while training
    edge_mode: str = "hierarchical"  # none (= ESMM) | parallel | hierarchical | fixed | random
    edge_pairs: str = "adjacent"  # which task pairs get edges: adjacent, or all earlier tasks
    # edge_mode=fixed: edges as "u.i->d.j" (task.layer), optionally "u.i->d.j:op" with op one
    # of EDGE_OPS fixing that edge's aggregation operator (a derived searched architecture)
    fixed_edges: tuple[str, ...] = ()
    detach_upstream: bool = False  # stop gradients from a downstream tower into upstream ones
    # how a concat edge's kernel row block starts: "zero" (the layer starts exactly as without
    # the edge, so its input scale does not grow with the number of incoming edges, and an
    # edge's gate has no gradient until its block has learned something) or "block" (each block
    # its own Glorot fan-in: a layer with K edges starts with ~(1+K)x the input variance)
    edge_init: str = "zero"
    embed_init_scale: float = 0.05  # std of the embedding initialiser
    bag_pooling: str = "mean"  # how a multi-valued field's entries are pooled: mean | sum
    bag_value_weighted: bool = False  # weight each bag entry by its feature value
    # edge_mode=random: each hierarchical candidate edge (over edge_pairs) is kept with
    # probability random_edge_prob, drawn once from random_seed (a fixed mask when unsearched)
    random_edge_prob: float = 0.5  # chance that a candidate edge is kept
    random_seed: int = 0  # seed of the edge draw: same seed, same edges
    # Baseline families (model/families.py): towers other than AutoHERI's, over the same input
    family: str = "autoheri"  # one of FAMILIES (only autoheri has edges); see model/variants.py
    bottom_hidden: tuple[int, ...] = (128, 64)  # shared_bottom, dbmtl: widths of the shared MLP
    tower_hidden: tuple[int, ...] = (32,)  # shared_bottom, dbmtl, mmoe, ple: per-task towers
    num_experts: int = 4  # mmoe: expert MLPs mixed by every task's softmax gate
    expert_hidden: tuple[int, ...] = (64,)  # mmoe, ple: widths of every expert MLP
    levels: int = 2  # ple: stacked CGC extraction levels
    task_experts: int = 1  # ple: task-specific experts per task and level
    shared_experts: int = 1  # ple: shared experts per level
    aitm_constraint_weight: float = 0.6  # aitm: weight of the label-constraint calibrator
    # Debiasing families (objectives.py). The propensity of stage k is the model's own
    # P(reach stage k-1) (pCTR for CVR), without gradient, clipped to [clip, 1 - clip] so no
    # inverse weight exceeds 1 / clip.
    propensity_clip: float = 0.05  # multi_dr, escm2_*, dcmt
    escm2_counterfactual_weight: float = 0.5  # escm2_*: lambda_c, the counterfactual CVR risk
    escm2_ctcvr_weight: float = 0.5  # escm2_*: lambda_g, the CTCVR BCE
    imputation_weight: float = 1.0  # multi_dr: weight of the imputation-tower loss
    dcmt_constraint_weight: float = 1e-3  # dcmt: weight of the mean |1 - (r + r*)|
    # How a layer combines its input with the gated upstream layers (model/aggregation.py):
    # concat (the paper's concat + linear) | gated_sum | attention | search (learn one per edge)
    aggregation: str = "concat"

    def __post_init__(self):
        check_types(self, "")
        check(self.embed_dim > 0, "embed_dim", "must be > 0")
        check(self.aggregation in AGGREGATIONS, "aggregation", f"one of {AGGREGATIONS}")
        check(self.edge_init in EDGE_INITS, "edge_init", f"one of {EDGE_INITS}")
        for e in self.fixed_edges:
            name, sep, op = e.partition(":")
            try:  # the edge's syntax and depths here, so a typo stops before anything runs
                edge = parse_edge(name)
            except ValueError as err:
                raise ConfigError(f"fixed_edges: {err}") from None
            check(
                max(edge.src_layer, edge.dst_layer) < len(self.hidden),
                "fixed_edges",
                f"edge {e!r}: layers must lie in [0, {len(self.hidden)}) (model.hidden has "
                f"{len(self.hidden)} layers)",
            )
            check(edge.src_task < edge.dst_task, "fixed_edges", f"edge {e!r}: needs u < d")
            check(
                not sep or op.strip() in EDGE_OPS,
                "fixed_edges",
                f"edge {e!r}: operator suffix must be one of {EDGE_OPS}",
            )
            check(
                not sep or self.aggregation != "search",
                "fixed_edges",
                f"edge {e!r}: per-edge operators cannot be combined with aggregation='search'",
            )
        check(len(self.hidden) > 0, "hidden", "needs at least one layer")
        check(all(h > 0 for h in self.hidden), "hidden", "widths must be > 0")
        check(self.activation in ACTIVATIONS, "activation", f"one of {ACTIVATIONS}")
        check(0 <= self.dropout < 1, "dropout", "must lie in [0, 1)")
        check(self.edge_mode in EDGE_MODES, "edge_mode", f"one of {EDGE_MODES}")
        check(self.edge_pairs in EDGE_PAIRS, "edge_pairs", f"one of {EDGE_PAIRS}")
        check(self.bag_pooling in BAG_POOLING, "bag_pooling", f"one of {BAG_POOLING}")
        check(
            self.edge_mode == "fixed" or not self.fixed_edges,
            "fixed_edges",
            "only used with edge_mode='fixed'",
        )
        check(0 <= self.random_edge_prob <= 1, "random_edge_prob", "must lie in [0, 1]")
        check(self.random_seed >= 0, "random_seed", "must be >= 0")
        check(self.family in FAMILY_SETTINGS, "family", f"one of {tuple(FAMILY_SETTINGS)}")
        check(
            self.family == "autoheri" or self.edge_mode == "none",
            "family",
            f"{self.family!r} has no edges: needs edge_mode='none'",
        )
        for k in ("bottom_hidden", "expert_hidden"):
            check(len(getattr(self, k)) > 0, k, "needs at least one layer")
        for k in ("bottom_hidden", "tower_hidden", "expert_hidden"):
            check(all(h > 0 for h in getattr(self, k)), k, "widths must be > 0")
        for k in ("num_experts", "levels", "task_experts", "shared_experts"):
            check(getattr(self, k) >= 1, k, "must be >= 1")
        check(self.aitm_constraint_weight >= 0, "aitm_constraint_weight", "must be >= 0")
        check(0 < self.propensity_clip < 0.5, "propensity_clip", "must lie in (0, 0.5)")
        for k in (
            "escm2_counterfactual_weight",
            "escm2_ctcvr_weight",
            "imputation_weight",
            "dcmt_constraint_weight",
        ):
            check(getattr(self, k) >= 0, k, "must be >= 0")
