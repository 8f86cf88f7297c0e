"""How a tower layer combines its own input with the gated upstream representations.

Layer j of task t has its own input `own` (B x d: x for j = 0, else h_t^{j-1}) and K incoming
edges k with gate g_k (a scalar: sigmoid of the edge logit while searching, else 1) and
upstream representation rep_k (B x d_k). Each edge carries one operator:

  concat      rep_k joins the kernel's rows: concat(own, g_k * rep_k, ...) @ W + b (the paper's
              operator; W has a row block per concat edge)
  gated_sum   rep_k is projected to the own width and added elementwise:
                  a = own + sum_k g_k * sigmoid(v_k) * (rep_k @ P_k)
              P_k: d_k x d, v_k: [d] a learned per-dimension gate (starts at sigmoid(0) = 0.5)
  attention   per example, a softmax over the set {own, rep_1 @ P_1, ..., rep_K @ P_K} of
                  s_i = <own @ Wq, item_i @ Wk> / sqrt(a),  Wq, Wk: d x a, a = min(d, ATTN_DIM)
              gives a = sum_i alpha_i * item_i. Edge gates weight set membership:
              alpha_i = m_i exp(s_i) / sum_l m_l exp(s_l) with m_own = 1, m_k = g_k, so a gate of
              0 removes the edge from the set exactly (the expectation of a Bernoulli edge over
              the set; a plain g_k-scaled item would still draw weight from `own`).
  search      every edge carries all three, mixed by w_k = softmax(op_logits[k]) over OPS:
              the concat block is scaled by g_k * w_k[0], the gated_sum term by w_k[1] and the
              attention membership by w_k[2].

The layer then applies act(concat(a, concat edges) @ W + b). With every gate 0, a = own and the
concat blocks vanish, so each operator reduces to the independent (ESMM) tower.

Params of layer j (under params["towers"]["task_t"]["layer_j"], the weights partition):
  kernel [d + sum over concat/search edges of d_k, width], bias [width]   (as before)
  proj   {"u_i": {"kernel": [d_k, d], "gate": [d] (gated_sum/search only)}} per non-concat edge
  attn   {"query": [d, a], "key": [d, a]} when an incoming edge can use attention
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp

from autoheri_jax import rng
from autoheri_jax.model.edges import AGGREGATIONS, OPS, split_edge_op  # noqa: F401 (re-exported)

ATTN_DIM = 32  # query/key width cap of the attention operator


def edge_key(src_task: int, src_layer: int) -> str:
    """Name of an incoming edge's params inside its destination layer (sources are unique)."""
    return f"{src_task}_{src_layer}"


def uses(op: str, kind: str) -> bool:
    """Whether an edge with operator `op` ("search" = all three) needs `kind`'s params."""
    return op == kind or op == "search"


class EdgeSlot(NamedTuple):
    """Static description of one incoming edge for `init_layer`."""

    key: str  # edge_key(...)
    seed: int  # the edge's rng.edge_code: its key does not depend on the other edges
    src_width: int  # d_k
    op: str  # one of AGGREGATIONS


class EdgeInput(NamedTuple):
    """One incoming edge at run time. weights: op -> scalar weight of that op (1.0 when the
    edge has a single fixed op)."""

    key: str
    rep: jax.Array  # B x d_k
    gate: jax.Array  # scalar g_k
    weights: Mapping[str, jax.Array | float]


def init_layer(key: jax.Array, own: int, slots: Sequence[EdgeSlot]) -> dict:
    """The non-kernel params of one layer whose own input is `own` wide: {"proj": {edge key:
    {"kernel": d_k x own, "gate": [own] for gated_sum}}, "attn": {"query", "key": own x
    min(own, ATTN_DIM)}}, each part only when an edge's operator needs it (empty for pure
    concat)."""
    dense_init = jax.nn.initializers.glorot_uniform()
    out: dict = {}
    proj = {}
    for s in slots:
        if s.op == "concat":
            continue
        k = rng.edge_stream(key, "edge_projection", s.seed)
        entry = {"kernel": dense_init(k, (s.src_width, own))}
        if uses(s.op, "gated_sum"):
            entry["gate"] = jnp.zeros((own,), jnp.float32)
        proj[s.key] = entry
    if proj:
        out["proj"] = proj
    if any(uses(s.op, "attention") for s in slots):
        a = min(own, ATTN_DIM)
        k = rng.stream(key, "attention")
        kq, kk = jax.random.split(k)
        out["attn"] = {"query": dense_init(kq, (own, a)), "key": dense_init(kk, (own, a))}
    return out


def attention_weights(
    attn: Mapping[str, jax.Array], own: jax.Array, items: jax.Array, membership: jax.Array
) -> jax.Array:
    """B x (1 + K) softmax weights over {own, items}; rows sum to 1.

    own: B x d; items: B x K x d (projected reps); membership: [K] (m_k >= 0; 0 = absent).
    """
    keys = jnp.concatenate([own[:, None, :], items], axis=1)  # B x (1+K) x d
    q = own @ attn["query"]  # B x a
    k = keys @ attn["key"]  # B x (1+K) x a
    scale = 1.0 / math.sqrt(attn["query"].shape[-1])
    s = jnp.einsum("ba,bna->bn", q, k) * scale
    m = jnp.concatenate([jnp.ones((1,), s.dtype), membership.astype(s.dtype)])
    present = m > 0
    s_max = jnp.max(jnp.where(present[None, :], s, -jnp.inf), axis=1, keepdims=True)
    # absent items: exp(min(., 0)) stays finite, and m = 0 zeroes it
    e = m[None, :] * jnp.exp(jnp.minimum(s - jax.lax.stop_gradient(s_max), 0.0))
    return e / jnp.sum(e, axis=1, keepdims=True)


def layer_input(layer: Mapping, own: jax.Array, edges: Sequence[EdgeInput]) -> jax.Array:
    """B x (d + sum of concat widths): the input the layer's kernel multiplies, from its own
    input `own` (B x d), its params `layer` (`init_layer`'s) and its incoming `edges`: the
    attention mix and gated sums enter the own block, each concat edge's gated rep is
    appended."""
    concat_parts = []
    gated = None
    att_items, att_members = [], []
    for e in edges:
        if "concat" in e.weights:
            concat_parts.append(_scaled(e.gate, e.weights["concat"]) * e.rep)
        if "gated_sum" in e.weights or "attention" in e.weights:
            p = layer["proj"][e.key]
            projected = e.rep @ p["kernel"]  # B x d
        if "gated_sum" in e.weights:
            term = _scaled(e.gate, e.weights["gated_sum"]) * jax.nn.sigmoid(p["gate"]) * projected
            gated = term if gated is None else gated + term
        if "attention" in e.weights:
            att_items.append(projected)
            att_members.append(_scaled(e.gate, e.weights["attention"]))
    a = own
    if att_items:
        items = jnp.stack(att_items, axis=1)
        alpha = attention_weights(layer["attn"], own, items, jnp.stack(att_members))
        keys = jnp.concatenate([own[:, None, :], items], axis=1)
        a = jnp.einsum("bn,bnd->bd", alpha, keys)
    if gated is not None:
        a = a + gated
    return jnp.concatenate([a, *concat_parts], axis=-1) if concat_parts else a


def _scaled(gate, weight):
    return gate if isinstance(weight, float) and weight == 1.0 else gate * weight
