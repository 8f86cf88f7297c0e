"""Entire-space funnel loss, the edge-entropy regulariser and the edge cost, from logits.

With conditional stage logits z_0 .. z_{T-1}, the entire-space probability of reaching stage t
is P_t = prod_{k<=t} sigmoid(z_k) (pCTR, pCTCVR = pCTR x pCVR, ...). ESMM trains BCE on every P_t
over all impressions, so the conditional heads (pCVR) are learned without a click-only sample.

Both logs are computed without forming P_t: log P_t is a running sum of log_sigmoid, and
1 - P_t = sum_k [prod_{m<k} p_m] (1 - p_k) ("fail first at stage k"), whose log is a running
logsumexp of log_sigmoid terms. Neither underflows for logits of +-1e4, where
log(1 - exp(log P_t)) would return -inf.

Models whose `spec.output` is "entire" (AITM) predict every P_t directly: z_t is the logit of
P_t itself, each stage gets a plain BCE, and the label-constraint calibrator penalises
P_t > P_{t-1}, which a funnel can never have. `task_losses` and `stage_probabilities` read
`spec.output` and serve both kinds.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from autoheri_jax.model.spec import ModelSpec


def funnel_log_probs(logits: jax.Array) -> tuple[jax.Array, jax.Array]:
    """logits B x T (conditional) -> (log P_t, log(1 - P_t)), each B x T, P_t entire-space."""
    log_pass = jax.nn.log_sigmoid(logits)
    log_fail = jax.nn.log_sigmoid(-logits)
    log_p = jnp.cumsum(log_pass, axis=-1)
    reach = jnp.concatenate([jnp.zeros_like(log_p[:, :1]), log_p[:, :-1]], axis=-1)
    log_not_p = jax.lax.cumlogsumexp(reach + log_fail, axis=logits.ndim - 1)
    return log_p, log_not_p


def stage_log_probs(logits: jax.Array, output: str = "conditional"):
    """logits B x T -> (log P_t, log(1 - P_t)), each B x T, for either kind of logits."""
    if output == "entire":
        return jax.nn.log_sigmoid(logits), jax.nn.log_sigmoid(-logits)
    if output != "conditional":
        raise ValueError(f"unknown logit output kind {output!r}")
    return funnel_log_probs(logits)


def entire_space_bce(
    logits: jax.Array, labels: jax.Array, output: str = "conditional"
) -> jax.Array:
    """[T] mean BCE of each entire-space probability P_t against cumulative labels (B x T).

    `output`: "conditional" logits are chained by the funnel product; "entire" logits are
    log-odds of P_t themselves.
    """
    log_p, log_not_p = stage_log_probs(logits, output)
    labels = labels.astype(log_p.dtype)
    nll = -(labels * log_p + (1.0 - labels) * log_not_p)
    return jnp.mean(nll, axis=0)


def label_constraint(entire: jax.Array) -> jax.Array:
    """Scalar sum over t >= 1 of mean_B max(P_t - P_{t-1}, 0); entire: B x T probabilities.

    Zero for any funnel-consistent prediction (P_t <= P_{t-1}); otherwise its gradient raises
    P_{t-1} and lowers P_t where they are out of order (AITM's calibrator).
    """
    if entire.shape[-1] < 2:
        return jnp.zeros((), entire.dtype)
    return jnp.sum(jnp.mean(jax.nn.relu(entire[:, 1:] - entire[:, :-1]), axis=0))


def task_losses(logits: jax.Array, labels: jax.Array, spec: ModelSpec):
    """(stage BCE [T], calibrator scalar) of a model's B x T logits against B x T labels.

    The calibrator is `spec.model.aitm_constraint_weight * label_constraint(P)` for AITM and exactly
    0 for every other family (conditional P_t never exceed P_{t-1}; ESM²'s paths cannot
    either). The debiasing families' objectives are in objectives.py.
    """
    stage_bce = entire_space_bce(logits, labels, spec.output)
    if spec.model.family != "aitm" or spec.model.aitm_constraint_weight == 0:
        return stage_bce, jnp.zeros((), stage_bce.dtype)
    return stage_bce, spec.model.aitm_constraint_weight * label_constraint(jax.nn.sigmoid(logits))


def stage_probabilities(
    logits: jax.Array, spec: ModelSpec, extras: dict | None = None
) -> tuple[jax.Array, jax.Array]:
    """logits B x T -> (conditional, entire-space) probabilities, each B x T.

    Conditional logits: (sigmoid(z_t), prod_{k<=t} sigmoid(z_k)). Entire-space logits:
    (P_t / P_{t-1} clipped to [0, 1], with P_{-1} = 1; sigmoid(z_t)), the ratio formed in log
    space so P_{t-1} near 0 gives no 0 / 0, unless the family states its conditional rates
    itself (extras["conditional_logits"], ESM²'s heads).
    """
    if spec.output != "entire":
        return jax.nn.sigmoid(logits), jnp.exp(funnel_log_probs(logits)[0])
    log_p = jax.nn.log_sigmoid(logits)
    if extras and "conditional_logits" in extras:
        return jax.nn.sigmoid(extras["conditional_logits"]), jnp.exp(log_p)
    previous = jnp.concatenate([jnp.zeros_like(log_p[:, :1]), log_p[:, :-1]], axis=-1)
    return jnp.exp(jnp.minimum(log_p - previous, 0.0)), jnp.exp(log_p)
