"""Stacked MLP building blocks shared by every baseline family (families.py and its siblings).

Expert, tower and head weights are stacked along a leading group axis (experts, or tasks) and
applied with one einsum per layer: an MLP's params are {"layer_j": {"kernel": G x in x out,
"bias": G x out}}, and its input is B x in (the same for every group) or B x G x in.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from autoheri_jax import rng as rng_streams
from autoheri_jax.model.spec import ModelSpec

Towers = dict
Act = Callable[[jax.Array], jax.Array]


def glorot(key: jax.Array, shape: tuple[int, int, int]) -> jax.Array:
    """Glorot-uniform G x in x out kernels, each with its own fan-in and fan-out.

    Drawn as one flat vector: XLA compiles a 1-D draw far faster than a 3-D one.
    """
    groups, n_in, n_out = shape
    limit = math.sqrt(6.0 / (n_in + n_out))
    flat = jax.random.uniform(key, (groups * n_in * n_out,), minval=-limit, maxval=limit)
    return flat.reshape(shape)


def dense(key: jax.Array, groups: int, n_in: int, n_out: int) -> dict:
    """One stacked layer: {"kernel": G x n_in x n_out (Glorot), "bias": G x n_out zeros}."""
    return {
        "kernel": glorot(key, (groups, n_in, n_out)),
        "bias": jnp.zeros((groups, n_out), jnp.float32),
    }


def mlp_init(key: jax.Array, groups: int, n_in: int, widths: tuple[int, ...]) -> dict:
    """`groups` independent MLPs of `widths`, stacked: {"layer_j": kernel G x in x out}."""
    layers = {}
    for j, width in enumerate(widths):
        layers[f"layer_{j}"] = dense(rng_streams.stream(key, "mlp_layer", j), groups, n_in, width)
        n_in = width
    return layers


def mlp_apply(mlp: dict, h: jax.Array, act: Act, drop: Callable) -> jax.Array:
    """h: B x in (shared by all groups) or B x G x in -> B x G x out (input if no layers)."""
    for j in range(len(mlp)):
        layer = mlp[f"layer_{j}"]
        if h.ndim == 2:
            h = jnp.einsum("bi,gio->bgo", h, layer["kernel"]) + layer["bias"]
        else:
            h = jnp.einsum("bgi,gio->bgo", h, layer["kernel"]) + layer["bias"]
        h = drop(act(h))
    return h


def heads_init(key: jax.Array, tasks: int, n_in: int) -> dict:
    """One linear head per task: {"kernel": T x n_in (Glorot), "bias": [T] zeros}."""
    return {"kernel": glorot(key, (tasks, n_in, 1))[..., 0], "bias": jnp.zeros((tasks,))}


def heads_apply(heads: dict, h: jax.Array) -> jax.Array:
    """h: B x T x d -> B x T logits (task t's head reads h[:, t])."""
    return jnp.einsum("btd,td->bt", h, heads["kernel"]) + heads["bias"]


def dropout(h: jax.Array, rng: jax.Array, salt: int, rate: float) -> jax.Array:
    """Inverted dropout of h with key fold_in(rng, salt): kept units are scaled by 1/(1-rate)."""
    keep = jax.random.bernoulli(rng_streams.stream(rng, "dropout", salt), 1 - rate, h.shape)
    return jnp.where(keep, h / (1 - rate), 0.0)


def dropper(spec: ModelSpec, rng: jax.Array | None) -> Callable:
    """drop(h) with a fresh key per call site (call order is static); identity without rng."""
    count = [0]

    def drop(h: jax.Array) -> jax.Array:
        if rng is None or spec.model.dropout <= 0:
            return h
        count[0] += 1
        return dropout(h, rng, count[0], spec.model.dropout)

    return drop


def out_dim(widths: tuple[int, ...], n_in: int) -> int:
    """Width of an MLP's output: its last layer's, or `n_in` when it has no layers."""
    return widths[-1] if widths else n_in
