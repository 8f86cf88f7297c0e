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

`ModelSpec.model.aggregation` picks how a layer combines its own input with the gated upstream
representations (aggregation.py): "concat" (above, the default), "gated_sum", "attention", or
"search" (every edge mixes all three). `ModelSpec.edge_ops` (one op per edge) overrides it per
edge, e.g. in a derived model. Only edges whose op is concat (or search) own kernel row blocks;
the others add params["towers"][...]["layer_j"]["proj" / "attn"].

The logit of task t is conditional: P(stage t | stage t-1). The funnel product lives in
losses.py. Params layout (top-level keys are optimiser partitions, see train/optim.py):

  {"embedding": {"table"}, "towers": {"task_t": {"layer_j": {"kernel", "bias"}, "head"}},
   "arch": {"edge_logits", "op_logits"}}  # "arch" only when searched and E > 0; op_logits
                                          # only with aggregation="search"

`ModelSpec.model.family` other than "autoheri" swaps the towers for a multi-task baseline
(families.FAMILIES: shared_bottom, mmoe, ple, aitm, dbmtl, gmsl, esm2, multi_dr, escm2_ips,
escm2_dr, dcmt) over the same x; its weights fill params["towers"] and it has no edges.
`ModelSpec.output` says how to read the logits: "conditional" (chained by the funnel product)
or "entire" (AITM, ESM²: P_t = sigmoid(logit_t)). `forward_outputs` also returns the outputs
only a family's loss reads (objectives.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp

from autoheri_jax import rng
from autoheri_jax.model import aggregation, blocks, families
from autoheri_jax.model.edges import incoming
from autoheri_jax.model.embedding import model_input
from autoheri_jax.model.gates import edge_probabilities, op_probabilities
from autoheri_jax.model.spec import ModelSpec, Params

_ACTIVATIONS = {"relu": jax.nn.relu, "gelu": jax.nn.gelu, "silu": jax.nn.silu, "tanh": jnp.tanh}


def _edge_block_init(spec: ModelSpec, key: jax.Array, rows: int, width: int) -> jax.Array:
    """A concat edge's kernel row block: zeros (`edge_init="zero"`: the layer's input scale is
    that of the layer without edges, and the edge enters only as training finds it useful) or
    Glorot over the block's own fan-in (`"block"`)."""
    if spec.model.edge_init == "zero":
        return jnp.zeros((rows, width), jnp.float32)
    return jax.nn.initializers.glorot_uniform()(key, (rows, width))


def init_params(
    key: jax.Array, spec: ModelSpec, init_edge_logit: float = 0.0, edge_logit_noise: float = 0.0
) -> Params:
    """Fresh parameters of `spec` from `key`, in the layout the module docstring gives: the
    table [table_rows, D], then the autoheri towers (layer_j's kernel [sum of
    `spec.layer_input_dims(t, j)`, hidden[j]]) or a baseline family's towers.

    The own-input block of every kernel is drawn as in a tower without edges (bitwise the
    same key), so a tower whose gates are all 0 starts exactly as an independent (ESMM) tower
    would; edge blocks start as `spec.model.edge_init` says.

    A gated supernet (`spec.has_arch`) also gets params["arch"]["edge_logits"] [E], each
    init_edge_logit plus edge_logit_noise x N(0, 1) from the key's "arch_noise" stream (the
    gradient search's settings: GradientSearch)."""
    dense_init = jax.nn.initializers.glorot_uniform()
    k_embed, k_towers = jax.random.split(key)
    params: Params = {
        "embedding": {
            "table": spec.model.embed_init_scale
            * jax.random.normal(k_embed, (spec.table_rows, spec.model.embed_dim))
        },
        "towers": {},
    }
    if spec.model.family != "autoheri":
        params["towers"] = families.init_family(k_towers, spec)
        return params
    for t in range(spec.num_tasks):
        tower = {}
        k_task = rng.stream(k_towers, "task", t)
        for j, width in enumerate(spec.model.hidden):
            k_layer = rng.stream(k_task, "layer", j)
            # Block keys depend on the block's identity, not its position, so the own block is
            # bitwise the same whatever edges a variant adds.
            inc = incoming(spec.edges, t, j)
            cat = [k for k in inc if spec.edge_op(k) in ("concat", "search")]
            codes = [rng.edge_code(spec.edges[k].src_task, spec.edges[k].src_layer) for k in cat]
            block_ids = [-1, *codes]
            blocks = spec.layer_input_dims(t, j)
            kernel = jnp.concatenate(
                [
                    dense_init(rng.stream(k_layer, "own_block"), (n, width))
                    if b == -1
                    else _edge_block_init(spec, rng.edge_stream(k_layer, "edge_block", b), n, width)
                    for b, n in zip(block_ids, blocks, strict=True)
                ],
                axis=0,
            )
            tower[f"layer_{j}"] = {"kernel": kernel, "bias": jnp.zeros((width,), jnp.float32)}
            slots = [
                aggregation.EdgeSlot(
                    aggregation.edge_key(spec.edges[k].src_task, spec.edges[k].src_layer),
                    rng.edge_code(spec.edges[k].src_task, spec.edges[k].src_layer),
                    spec.model.hidden[spec.edges[k].src_layer],
                    spec.edge_op(k),
                )
                for k in inc
            ]
            # a separate key subtree, so kernel blocks stay bitwise as under concat
            tower[f"layer_{j}"] |= aggregation.init_layer(
                rng.stream(k_layer, "aggregation"), blocks[0], slots
            )
        k_head = rng.stream(k_task, "layer", len(spec.model.hidden))  # the layer after the last
        tower["head"] = {
            "kernel": dense_init(k_head, (spec.model.hidden[-1], 1)),
            "bias": jnp.zeros((1,), jnp.float32),
        }
        params["towers"][f"task_{t}"] = tower
    if spec.has_arch:
        logits = jnp.full((spec.num_edges,), init_edge_logit, jnp.float32)
        if edge_logit_noise > 0:
            k_arch = rng.stream(key, "arch_noise")
            logits = logits + edge_logit_noise * jax.random.normal(k_arch, logits.shape)
        params["arch"] = {"edge_logits": logits}
        if spec.searches_ops:
            params["arch"]["op_logits"] = jnp.zeros(
                (spec.num_edges, len(aggregation.OPS)), jnp.float32
            )
    return params


def forward(params: Params, spec: ModelSpec, inputs: Mapping[str, jax.Array], **kw) -> jax.Array:
    """B x T stage logits: conditional, or entire-space where `spec.output == "entire"`.

    inputs: a batch (see embedding.embed; dense float32 [B, Dd]); keywords as
    `forward_outputs`: gates [E] overrides `edge_probabilities` (tests and derived masks use
    it); gates [M, E], a batch of M masks, gives M x B x T logits (`masks_forward`); dropout_rng
    enables dropout; embedded: precomputed B x (F + Fb) x D embeddings (then
    params["embedding"] is unused).
    """
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
    act = _ACTIVATIONS[spec.model.activation]
    if spec.model.family != "autoheri":
        return families.family_outputs(params["towers"], spec, x, act, dropout_rng)
    g = edge_probabilities(params, spec) if gates is None else gates
    if jnp.ndim(g) == 2 and not masks_forward(spec):
        raise ValueError("gates [M, E] need concat edges on the autoheri towers; vmap instead")
    w = op_probabilities(params, spec) if spec.searches_ops else None
    outputs: dict[tuple[int, int], jax.Array] = {}
    logits = []
    own0 = _shared_first_layer(params, spec, x)
    for t in range(spec.num_tasks):
        tower = params["towers"][f"task_{t}"]
        h = x
        for j in range(len(spec.model.hidden)):
            layer = tower[f"layer_{j}"]
            inc = incoming(spec.edges, t, j)
            reps = {}
            for k in inc:
                e = spec.edges[k]
                rep = outputs[(e.src_task, e.src_layer)]
                if spec.model.detach_upstream:
                    rep = jax.lax.stop_gradient(rep)
                reps[k] = rep
            if all(spec.edge_op(k) == "concat" for k in inc):
                own_pre = own0[t] if j == 0 and own0 is not None else None
                edge_reps, gates = [reps[k] for k in inc], [g[..., k] for k in inc]
                pre = gated_concat(layer["kernel"], h, edge_reps, gates, own_pre)
            else:
                z = aggregation.layer_input(
                    layer, h, [_edge_input(spec, k, reps[k], g[k], w) for k in inc]
                )
                pre = z @ layer["kernel"]
            h = act(pre + layer["bias"])
            if dropout_rng is not None and spec.model.dropout > 0:
                h = blocks.dropout(h, dropout_rng, rng.dropout_site(t, j), spec.model.dropout)
            outputs[(t, j)] = h
        logits.append(h @ tower["head"]["kernel"] + tower["head"]["bias"])
    if jnp.ndim(g) == 2:  # the towers upstream of every edge ran once: broadcast to M x B x 1
        shape = (g.shape[0], *logits[-1].shape[-2:])
        logits = [jnp.broadcast_to(v, shape) for v in logits]
    return jnp.concatenate(logits, axis=-1), {}


def masks_forward(spec: ModelSpec) -> bool:
    """Whether `forward` takes a batch of masks (gates [M, E]) directly: every edge is a
    concat edge of the autoheri towers, so a layer's pre-activation is linear in its gates."""
    return spec.model.family == "autoheri" and all(
        spec.edge_op(k) == "concat" for k in range(spec.num_edges)
    )


def gated_concat(
    kernel: jax.Array,
    h: jax.Array,
    reps: Sequence[jax.Array],
    gates: Sequence[jax.Array],
    own_pre: jax.Array | None = None,
) -> jax.Array:
    """The concat layer's pre-activation concat(h, g_1 r_1, ..., g_K r_K) @ W, computed faster.

    h: B x Din (the layer's own input); reps: K upstream outputs B x H_k; gates: K scalars;
    kernel: (Din + sum H_k) x N, row blocks in that order; own_pre: h @ W[:Din] when the
    caller already has it (`_shared_first_layer`). Since g_k r_k @ W_k == r_k @ (g_k W_k), the
    gates scale W's row blocks (K x N per step) instead of the B x H_k activations, in both
    passes. Equal to the formula up to float rounding (tests/test_model.py).

    gates of shape [M] (M masks, `forward` with gates [M, E]) -> M x B x N: each edge's
    product r_k @ W_k does not depend on the mask, so it is computed once and only its gated
    sum runs per mask.

    """
    if reps and jnp.ndim(gates[0]) == 1:
        d_in = h.shape[-1]
        pre = h @ kernel[:d_in] if own_pre is None else own_pre
        for g, r in zip(gates, reps, strict=True):
            block = r @ kernel[d_in : d_in + r.shape[-1]]
            pre = pre + g[:, None, None] * block
            d_in += r.shape[-1]
        return pre
    if reps:
        row_gates = [jnp.ones((h.shape[-1],), kernel.dtype)]
        row_gates += [jnp.broadcast_to(g, r.shape[-1:]) for g, r in zip(gates, reps, strict=True)]
        kernel = kernel * jnp.concatenate(row_gates)[:, None]
    if own_pre is None:
        return jnp.concatenate([h, *reps], axis=-1) @ kernel
    if not reps:
        return own_pre
    return own_pre + jnp.concatenate(reps, axis=-1) @ kernel[h.shape[-1] :]


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
