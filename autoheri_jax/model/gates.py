"""The relaxed edges: gate probabilities, and the regularisers that push them to 0 or 1.

While searching, edge k's gate is sigmoid(edge_logits[k]): the layer sees the expectation of a
Bernoulli edge (model/network.py). With aggregation="search" each edge also mixes the
operators of model/edges.py OPS by a softmax of its op_logits. The entropy terms (and the
optional sparsity cost) are added to the training loss by train/step.py.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from autoheri_jax.model.edges import OPS
from autoheri_jax.model.spec import ModelSpec, Params


def edge_probabilities(params: Params, spec: ModelSpec) -> jax.Array:
    """[E] probability of each candidate edge (1 for every edge of an unsearched model)."""
    if spec.has_arch:
        return jax.nn.sigmoid(params["arch"]["edge_logits"])
    return jnp.ones((spec.num_edges,), jnp.float32)


def op_probabilities(params: Params, spec: ModelSpec) -> jax.Array:
    """[E, 3] probability of each operator (OPS) per edge: the softmax of
    op_logits while searching ops, else one-hot on each edge's fixed operator."""
    if spec.searches_ops:
        return jax.nn.softmax(params["arch"]["op_logits"], axis=-1)
    onehot = [[float(spec.edge_op(k) == op) for op in OPS] for k in range(spec.num_edges)]
    return jnp.asarray(onehot, jnp.float32).reshape(spec.num_edges, len(OPS))


def bernoulli_entropy_from_logits(logits: jax.Array) -> jax.Array:
    """Elementwise entropy (nats) of Bernoulli(sigmoid(logits)); 0 at p in {0, 1}."""
    p = jax.nn.sigmoid(logits)
    return -(p * jax.nn.log_sigmoid(logits) + (1.0 - p) * jax.nn.log_sigmoid(-logits))


def edge_entropy(edge_logits: jax.Array | None) -> jax.Array:
    """Scalar sum over edges of each edge's entropy (edge_logits [E]; 0 for None or E = 0).

    Minimising it pushes every probability towards 0 or 1, so the relaxed architecture the
    search trains is close to the discrete one it derives. A sum, not a mean: the push on one
    edge does not shrink as candidates are added, so a weight means the same at 9, 18 or 27
    candidates."""
    if edge_logits is None or edge_logits.size == 0:
        return jnp.zeros((), jnp.float32)
    return jnp.sum(bernoulli_entropy_from_logits(edge_logits))


def edge_cost(edge_logits: jax.Array | None) -> jax.Array:
    """Scalar expected number of kept edges, sum_k sigmoid(logit_k) over edge_logits [E] (0
    for None or E = 0): times `sparsity_weight`, a price each edge must earn back in task loss
    to stay on."""
    if edge_logits is None or edge_logits.size == 0:
        return jnp.zeros((), jnp.float32)
    return jnp.sum(jax.nn.sigmoid(edge_logits))


def op_entropy(op_logits: jax.Array) -> jax.Array:
    """Sum over edges of the categorical entropy of each edge's operator choice [E, ops]:
    pushed to one-hot like the edges."""
    logp = jax.nn.log_softmax(op_logits, axis=-1)
    return -jnp.sum(jnp.exp(logp) * logp)


def entropy_weight_at(
    step: jax.Array, weight: float, warmup_steps: int, start_step: int = 0
) -> jax.Array:
    """0 before `start_step`, then a linear ramp to `weight` over `warmup_steps` (a step
    to `weight` at `start_step` when warmup is 0)."""
    since = step.astype(jnp.float32) - start_step
    if warmup_steps <= 0:
        return jnp.where(since >= 0, weight, 0.0).astype(jnp.float32)
    return weight * jnp.clip(since / warmup_steps, 0.0, 1.0)
