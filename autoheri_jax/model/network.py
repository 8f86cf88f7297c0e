"""AutoHERI as pure functions over a plain params pytree.

Parts, in the order data flows:

  embedding   one table [V, D] for all fields (field f owns rows offsets[f] ...). Single-valued
              fields look up B x F x D; each multi-valued (bag) field pools its B x L entries
              (sum or mean over the mask, optionally weighted by feature value) to B x D, so
              the embedded input is B x (F + Fb) x D, flattened and joined with dense features
              into x: B x ((F + Fb) * D + Dd).
  towers      one MLP per funnel stage. Hidden layer j of task t maps
                  concat(h_t^{j-1}, g_1 * h_{u1}^{i1}, g_2 * h_{u2}^{i2}, ...) @ W + b
              where h_t^{-1} = x and each (g_k, h_u^i) comes from an edge u.i -> t.j. The
              kernel is one matrix whose rows are blocks: own input first, then one block per
              incoming edge in edge order. A head maps the last hidden layer to one logit.
              (Computed the same way but cheaper: the gates scale W's row blocks rather than
              the B x K activations, and all towers' first layers multiply x in one matmul.)
  arch        edge logits [E]; while searching, gate g_k = sigmoid(logit_k), so the layer sees
              the expectation of a Bernoulli edge. Without search every gate is 1.
              With aggregation="search" also op_logits [E, 3] (softmax over aggregation.OPS).

`ModelSpec.aggregation` picks how a layer combines its own input with the gated upstream
representations (aggregation.py): "concat" (above, the default), "gated_sum", "attention", or
"search" (every edge mixes all three). `ModelSpec.edge_ops` (one op per edge) overrides it per
edge, e.g. in a derived model. Only edges whose op is concat (or search) own kernel row blocks;
the others add params["towers"][...]["layer_j"]["proj" / "attn"].

The logit of task t is conditional: P(stage t | stage t-1). The funnel product lives in
losses.py. Params layout (top-level keys are optimiser partitions, see optim.py):

  {"embedding": {"table"}, "towers": {"task_t": {"layer_j": {"kernel", "bias"}, "head"}},
   "arch": {"edge_logits", "op_logits"}}  # "arch" only when searched and E > 0; op_logits
                                          # only with aggregation="search"

`ModelSpec.family` other than "autoheri" swaps the towers for a multi-task baseline
(families.FAMILIES: shared_bottom, mmoe, ple, aitm, dbmtl, gmsl, esm2, multi_dr, escm2_ips,
escm2_dr, dcmt) over the same x; its weights fill params["towers"] and it has no edges.
`ModelSpec.output` says how to read the logits: "conditional" (chained by the funnel product)
or "entire" (AITM, ESM²: P_t = sigmoid(logit_t)). `forward_outputs` also returns the outputs
only a family's loss reads (objectives.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from autoheri_jax.model import aggregation, blocks, families
from autoheri_jax.model.edges import Edge, incoming

Params = dict
TABLE_ROW_MULTIPLE = 128  # padded table rows: any power-of-two device count <= 128 shards them
ARCH_NOISE_STREAM = 2  # fold_in tag of the starting-logit noise (split(key) uses neither)
_ACTIVATIONS = {"relu": jax.nn.relu, "gelu": jax.nn.gelu, "silu": jax.nn.silu, "tanh": jnp.tanh}


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
        return families.FAMILIES[self.family].output if self.family != "autoheri" else "conditional"

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


def _edge_id(e: Edge) -> int:
    return 1 + e.src_task * 1000 + e.src_layer


def _edge_block_init(spec: ModelSpec, key: jax.Array, rows: int, width: int) -> jax.Array:
    """A concat edge's kernel row block: zeros (`edge_init="zero"`: the layer's input scale is
    that of the layer without edges, and the edge enters only as training finds it useful) or
    Glorot over the block's own fan-in (`"block"`)."""
    if spec.edge_init == "zero":
        return jnp.zeros((rows, width), jnp.float32)
    return jax.nn.initializers.glorot_uniform()(key, (rows, width))


def init_params(key: jax.Array, spec: ModelSpec) -> Params:
    """Fresh parameters. The own-input block of every kernel is drawn as in a tower without
    edges (bitwise the same key), so a tower whose gates are all 0 starts exactly as an
    independent (ESMM) tower would; edge blocks start as `spec.edge_init` says."""
    dense_init = jax.nn.initializers.glorot_uniform()
    k_embed, k_towers = jax.random.split(key)
    params: Params = {
        "embedding": {
            "table": spec.embed_init_scale
            * jax.random.normal(k_embed, (spec.table_rows, spec.embed_dim))
        },
        "towers": {},
    }
    if spec.family != "autoheri":
        params["towers"] = families.init_family(k_towers, spec)
        return params
    for t in range(spec.num_tasks):
        tower = {}
        k_task = jax.random.fold_in(k_towers, t)
        for j, width in enumerate(spec.hidden):
            k_layer = jax.random.fold_in(k_task, j)
            # Block keys depend on the block's identity, not its position, so the own block is
            # bitwise the same whatever edges a variant adds.
            inc = incoming(spec.edges, t, j)
            cat = [k for k in inc if spec.edge_op(k) in ("concat", "search")]
            block_ids = [-1, *(_edge_id(spec.edges[k]) for k in cat)]
            blocks = spec.layer_input_dims(t, j)
            kernel = jnp.concatenate(
                [
                    dense_init(jax.random.fold_in(k_layer, b + 1), (n, width))
                    if b == -1
                    else _edge_block_init(spec, jax.random.fold_in(k_layer, b + 1), n, width)
                    for b, n in zip(block_ids, blocks, strict=True)
                ],
                axis=0,
            )
            tower[f"layer_{j}"] = {"kernel": kernel, "bias": jnp.zeros((width,), jnp.float32)}
            slots = [
                aggregation.EdgeSlot(
                    aggregation.edge_key(spec.edges[k].src_task, spec.edges[k].src_layer),
                    _edge_id(spec.edges[k]),
                    spec.hidden[spec.edges[k].src_layer],
                    spec.edge_op(k),
                )
                for k in inc
            ]
            # a separate key subtree, so kernel blocks stay bitwise as under concat
            tower[f"layer_{j}"] |= aggregation.init_layer(
                jax.random.fold_in(k_layer, 1_000_000), blocks[0], slots
            )
        k_head = jax.random.fold_in(k_task, len(spec.hidden))
        tower["head"] = {
            "kernel": dense_init(k_head, (spec.hidden[-1], 1)),
            "bias": jnp.zeros((1,), jnp.float32),
        }
        params["towers"][f"task_{t}"] = tower
    if spec.has_arch:
        logits = jnp.full((spec.num_edges,), spec.init_edge_logit, jnp.float32)
        if spec.edge_logit_noise > 0:
            k_arch = jax.random.fold_in(key, ARCH_NOISE_STREAM)
            logits = logits + spec.edge_logit_noise * jax.random.normal(k_arch, logits.shape)
        params["arch"] = {"edge_logits": logits}
        if spec.searches_ops:
            params["arch"]["op_logits"] = jnp.zeros(
                (spec.num_edges, len(aggregation.OPS)), jnp.float32
            )
    return params


def edge_probabilities(params: Params, spec: ModelSpec) -> jax.Array:
    """[E] probability of each candidate edge (1 for every edge of an unsearched model)."""
    if spec.has_arch:
        return jax.nn.sigmoid(params["arch"]["edge_logits"])
    return jnp.ones((spec.num_edges,), jnp.float32)


def op_probabilities(params: Params, spec: ModelSpec) -> jax.Array:
    """[E, 3] probability of each operator (aggregation.OPS) per edge: the softmax of
    op_logits while searching ops, else one-hot on each edge's fixed operator."""
    if spec.searches_ops:
        return jax.nn.softmax(params["arch"]["op_logits"], axis=-1)
    onehot = [
        [float(spec.edge_op(k) == op) for op in aggregation.OPS] for k in range(spec.num_edges)
    ]
    return jnp.asarray(onehot, jnp.float32).reshape(spec.num_edges, len(aggregation.OPS))


def lookup_rows(spec: ModelSpec, inputs: Mapping[str, jax.Array]):
    """Table rows of every lookup: single fields [B, F], bag entries [B, Fb, L] (or None).

    Ids are clamped into their field's rows, so a field never reads another field's
    embeddings and sparse_rows.unique_row_bound holds. Datasets reject out-of-range ids when
    built (CTRDataset), so the clamp changes nothing for data that got here.
    """
    offsets = jnp.asarray(spec.field_offsets)
    num_single = len(spec.vocab_sizes)
    top = jnp.asarray(spec.vocab_sizes + spec.bag_vocab_sizes, jnp.int32) - 1
    single = jnp.clip(inputs["sparse"], 0, top[None, :num_single]) + offsets[None, :num_single]
    bags = None
    if spec.bag_vocab_sizes:
        ids = jnp.clip(inputs["bag_ids"], 0, top[None, num_single:, None])
        bags = ids + offsets[None, num_single:, None]
    return single, bags


def embed_from(
    table: jax.Array,
    spec: ModelSpec,
    inputs: Mapping[str, jax.Array],
    single: jax.Array,
    bags: jax.Array | None,
) -> jax.Array:
    """B x (F + Fb) x D from `table` rows: `single` [B, F] and `bags` [B, Fb, L] index it.

    `table` is the whole embedding table, or just a batch's unique rows (sparse updates).
    """
    out = jnp.take(table, single, axis=0)
    if bags is not None:
        vectors = jnp.take(table, bags, axis=0)  # B x Fb x L x D
        mask = inputs["bag_mask"]
        weights = mask * inputs["bag_values"] if spec.bag_value_weighted else mask
        pooled = jnp.einsum("bfl,bfld->bfd", weights, vectors)
        if spec.bag_pooling == "mean":
            pooled = pooled / jnp.maximum(jnp.sum(mask, axis=-1), 1.0)[..., None]
        out = jnp.concatenate([out, pooled], axis=1)
    return out


def embed(params: Params, spec: ModelSpec, inputs: Mapping[str, jax.Array]) -> jax.Array:
    """B x (F + Fb) x D field embeddings from the shared table.

    inputs: sparse int32 [B, F] per-field ids; with bag fields also bag_ids int32 [B, Fb, L],
    bag_values and bag_mask float32 [B, Fb, L] (mask 0 = padding).
    """
    single, bags = lookup_rows(spec, inputs)
    return embed_from(params["embedding"]["table"], spec, inputs, single, bags)


def model_input(
    params: Params,
    spec: ModelSpec,
    inputs: Mapping[str, jax.Array],
    *,
    embedded: jax.Array | None = None,
) -> jax.Array:
    """x: B x input_dim, the flattened field embeddings joined with the dense features."""
    if embedded is None:
        embedded = embed(params, spec, inputs)
    x = embedded.reshape(inputs["sparse"].shape[0], -1)
    if spec.num_dense:
        x = jnp.concatenate([x, inputs["dense"].astype(x.dtype)], axis=-1)
    return x


def forward(
    params: Params,
    spec: ModelSpec,
    inputs: Mapping[str, jax.Array],
    *,
    gates: jax.Array | None = None,
    dropout_rng: jax.Array | None = None,
    embedded: jax.Array | None = None,
) -> jax.Array:
    """B x T stage logits: conditional, or entire-space where `spec.output == "entire"`.

    inputs: a batch (see `embed`; dense float32 [B, Dd]); gates: [E] overrides
    `edge_probabilities` (tests and derived masks use it); dropout_rng: enables dropout;
    embedded: precomputed B x (F + Fb) x D embeddings (then params["embedding"] is unused).
    """
    kw = {"gates": gates, "dropout_rng": dropout_rng, "embedded": embedded}
    return forward_outputs(params, spec, inputs, **kw)[0]


def forward_outputs(
    params: Params,
    spec: ModelSpec,
    inputs: Mapping[str, jax.Array],
    *,
    gates: jax.Array | None = None,
    dropout_rng: jax.Array | None = None,
    embedded: jax.Array | None = None,
) -> tuple[jax.Array, dict]:
    """(B x T stage logits as `forward`, extras): extras holds the outputs only a family's
    loss reads (imputed errors, counterfactual heads; families.py), {} for most models."""
    x = model_input(params, spec, inputs, embedded=embedded)
    act = _ACTIVATIONS[spec.activation]
    if spec.family != "autoheri":
        return families.family_outputs(params["towers"], spec, x, act, dropout_rng)
    g = edge_probabilities(params, spec) if gates is None else gates
    w = op_probabilities(params, spec) if spec.searches_ops else None
    outputs: dict[tuple[int, int], jax.Array] = {}
    logits = []
    own0 = _shared_first_layer(params, spec, x)
    for t in range(spec.num_tasks):
        tower = params["towers"][f"task_{t}"]
        h = x
        for j in range(len(spec.hidden)):
            layer = tower[f"layer_{j}"]
            inc = incoming(spec.edges, t, j)
            reps = {}
            for k in inc:
                e = spec.edges[k]
                rep = outputs[(e.src_task, e.src_layer)]
                if spec.detach_upstream:
                    rep = jax.lax.stop_gradient(rep)
                reps[k] = rep
            kernel = layer["kernel"]
            if all(spec.edge_op(k) == "concat" for k in inc):
                # g_k * rep_k @ W_k == rep_k @ (g_k * W_k): the gates scale the kernel's row
                # blocks (K x N per step) instead of the B x K activations, in both passes.
                if inc:
                    row_gates = [jnp.ones((h.shape[-1],), kernel.dtype)]
                    row_gates += [jnp.broadcast_to(g[k], reps[k].shape[-1:]) for k in inc]
                    kernel = kernel * jnp.concatenate(row_gates)[:, None]
                if j == 0 and own0 is not None:
                    pre = own0[t]
                    if inc:
                        edge_in = jnp.concatenate([reps[k] for k in inc], axis=-1)
                        pre = pre + edge_in @ kernel[h.shape[-1] :]
                else:
                    pre = jnp.concatenate([h, *(reps[k] for k in inc)], axis=-1) @ kernel
            else:
                z = aggregation.layer_input(
                    layer, h, [_edge_input(spec, k, reps[k], g[k], w) for k in inc]
                )
                pre = z @ kernel
            h = act(pre + layer["bias"])
            if dropout_rng is not None and spec.dropout > 0:
                h = blocks.dropout(h, dropout_rng, t * 1000 + j, spec.dropout)
            outputs[(t, j)] = h
        logits.append(h @ tower["head"]["kernel"] + tower["head"]["bias"])
    return jnp.concatenate(logits, axis=-1), {}


def _shared_first_layer(params: Params, spec: ModelSpec, x: jax.Array) -> list | None:
    """Every tower's first layer applied to its own input x in one matmul, split per task:
    x @ [W_0 | W_1 | ...] (B x T*H0). Each tower reads the same x, so one wide product runs
    faster than T narrow ones, and its backward yields dX already summed over the towers.
    None (each layer multiplies on its own) with one task or a non-concat edge into layer 0."""
    first = [incoming(spec.edges, t, 0) for t in range(spec.num_tasks)]
    if spec.num_tasks < 2 or any(spec.edge_op(k) != "concat" for inc in first for k in inc):
        return None
    d_in = x.shape[-1]
    own = [params["towers"][f"task_{t}"]["layer_0"]["kernel"][:d_in] for t in range(spec.num_tasks)]
    return jnp.split(x @ jnp.concatenate(own, axis=1), spec.num_tasks, axis=1)


def _edge_input(spec: ModelSpec, k: int, rep, gate, w) -> aggregation.EdgeInput:
    e = spec.edges[k]
    op = spec.edge_op(k)
    if op == "search":
        weights = {name: w[k, i] for i, name in enumerate(aggregation.OPS)}
    else:
        weights = {op: 1.0}
    return aggregation.EdgeInput(aggregation.edge_key(e.src_task, e.src_layer), rep, gate, weights)


def derive_ops(params: Params, spec: ModelSpec) -> list[str]:
    """Each edge's argmax operator (its fixed operator when ops are not searched)."""
    probs = np.asarray(op_probabilities(params, spec))
    return [aggregation.OPS[int(i)] for i in probs.argmax(axis=-1)] if probs.size else []


def derive_edges(probs: Sequence[float], edges: Sequence[Edge], threshold: float) -> list[Edge]:
    """The discrete architecture: edges whose probability exceeds `threshold`."""
    return [e for e, p in zip(edges, probs, strict=True) if float(p) > threshold]
