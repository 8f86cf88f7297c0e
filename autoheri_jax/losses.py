"""Entire-space funnel loss and the edge-entropy regulariser, in log space from logits.

With conditional stage logits z_0 .. z_{T-1}, the entire-space probability of reaching stage t
is P_t = prod_{k<=t} sigmoid(z_k) (pCTR, pCTCVR = pCTR x pCVR, ...). ESMM trains BCE on every P_t
over all impressions, so the conditional heads (pCVR) are learned without a click-only sample.

Both logs are computed without forming P_t: log P_t is a running sum of log_sigmoid, and
1 - P_t = sum_k [prod_{m<k} p_m] (1 - p_k) ("fail first at stage k"), whose log is a running
logsumexp of log_sigmoid terms. Neither underflows for logits of +-1e4, where
log(1 - exp(log P_t)) would return -inf.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def funnel_log_probs(logits: jax.Array) -> tuple[jax.Array, jax.Array]:
    """logits B x T (conditional) -> (log P_t, log(1 - P_t)), each B x T, P_t entire-space."""
    log_pass = jax.nn.log_sigmoid(logits)
    log_fail = jax.nn.log_sigmoid(-logits)
    log_p = jnp.cumsum(log_pass, axis=-1)
    reach = jnp.concatenate([jnp.zeros_like(log_p[:, :1]), log_p[:, :-1]], axis=-1)
    log_not_p = jax.lax.cumlogsumexp(reach + log_fail, axis=logits.ndim - 1)
    return log_p, log_not_p


def entire_space_bce(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """[T] mean BCE of each entire-space probability P_t against cumulative labels (B x T)."""
    log_p, log_not_p = funnel_log_probs(logits)
    labels = labels.astype(log_p.dtype)
    nll = -(labels * log_p + (1.0 - labels) * log_not_p)
    return jnp.mean(nll, axis=0)


def bernoulli_entropy_from_logits(logits: jax.Array) -> jax.Array:
    """Elementwise entropy (nats) of Bernoulli(sigmoid(logits)); 0 at p in {0, 1}."""
    p = jax.nn.sigmoid(logits)
    return -(p * jax.nn.log_sigmoid(logits) + (1.0 - p) * jax.nn.log_sigmoid(-logits))


def edge_entropy(edge_logits: jax.Array | None) -> jax.Array:
    """Mean entropy over edges. Minimising it pushes every probability towards 0 or 1, so the
    relaxed architecture the search trains is close to the discrete one it derives."""
    if edge_logits is None or edge_logits.size == 0:
        return jnp.zeros((), jnp.float32)
    return jnp.mean(bernoulli_entropy_from_logits(edge_logits))


def entropy_weight_at(step: jax.Array, weight: float, warmup_steps: int) -> jax.Array:
    """Linear warm-up from 0 to `weight` over `warmup_steps` (constant when warmup is 0)."""
    if warmup_steps <= 0:
        return jnp.asarray(weight, jnp.float32)
    frac = jnp.minimum(1.0, step.astype(jnp.float32) / warmup_steps)
    return weight * frac
