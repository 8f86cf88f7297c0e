"""Each model family's training objective, from its logits and extra outputs.

Notation for a later funnel stage k (k = 1 is CVR): o = label of stage k-1 (clicked), r = label
of stage k (converted), r_hat = the predicted P(stage k | stage k-1) (pCVR), and
delta = BCE(r, r_hat), defined on every row but observed only where o = 1. The propensity
o_hat = P(reach stage k-1) is the model's own entire-space prediction (pCTR for CVR), taken
without gradient (the CVR risk must not move the CTR tower to shrink its own weights) and
clipped to [c, 1 - c], c = `spec.model.propensity_clip`. Every mean is over the batch's
impressions D.

  ESMM-like  sum_t BCE(P_t) over D (losses.entire_space_bce), plus AITM's calibrator.
  multi_dr   Multi-DR (Zhang et al., WWW 2020): CTR BCE + the doubly robust CVR risk
                 DR = mean_D [ e_hat + o (delta - e_hat) / o_hat ]
             + imputation_weight * mean_D [ o (delta - e_hat)^2 / o_hat ],
             e_hat = the imputation tower's error estimate. No CTCVR term (the paper trains
             CTR and CVR; its CTR tower gives the propensity).
  escm2_ips  ESCM² (Wang et al., SIGIR 2022): CTR BCE + lambda_g CTCVR BCE + lambda_c IPS,
                 IPS = mean_D [ o delta / o_hat ].
  escm2_dr   the same with lambda_c (DR + mean_D [ o (delta - e_hat)^2 / o_hat ]), the
             imputation loss inside the counterfactual term as in the official code.
  dcmt       DCMT (Zhu et al., ICDE 2023): CTR BCE + CTCVR BCE + the twin-head risk
                 mean_D [ o delta / o_hat + (1 - o) BCE(1 - r, r*_hat) / (1 - o_hat) ]
                 + dcmt_constraint_weight * mean_D | 1 - (r_hat + r*_hat) |,
             r*_hat = the counterfactual head; its label on unclicked rows is 1 - r = 1. The
             factual head r_hat is the prediction.

Published defaults and the choices made here (see the model table in docs/config.md):
  * ESCM²'s official code (PaddleRec models/multitask/escm2) weighs lambda_c = lambda_g = 0.5,
    caps the DR weight at 15 (a propensity floor of 1/15) and normalises its IPS term by the
    batch's clicks; here every term is the paper's mean over D, and lambda_c, lambda_g are
    `escm2_counterfactual_weight`, `escm2_ctcvr_weight` (0.5 each).
  * DCMT's public reimplementations weigh every term 1 and the constraint 1e-3.
  * The DR terms are trained as in DR-JL (Wang et al., ICML 2019), jointly in one step with
    each term training its own model: the DR risk moves the prediction (e_hat without
    gradient), the imputation loss moves the imputation tower (delta without gradient).
    ESCM²'s PaddleRec code lets both gradients reach both towers; there the imputation loss
    also drags every pCVR's error towards the imputed error, a term no DR estimator has.

  * With 3 stages, each later stage k gets its own risk, o = reached stage k-1.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from autoheri_jax.model.losses import funnel_log_probs, task_losses
from autoheri_jax.model.spec import ModelSpec


def bce_from_logits(labels: jax.Array, logits: jax.Array) -> jax.Array:
    """Elementwise BCE(labels, sigmoid(logits)), stable for any logit."""
    return -(labels * jax.nn.log_sigmoid(logits) + (1.0 - labels) * jax.nn.log_sigmoid(-logits))


def propensities(logits: jax.Array, clip: float) -> jax.Array:
    """B x (T-1): the detached, clipped P(reach stage k-1) for each later stage k, from B x T
    conditional logits (pCTR for CVR; pCTR x pATR for the third stage)."""
    reach = jnp.exp(funnel_log_probs(jax.lax.stop_gradient(logits))[0][:, :-1])
    return jnp.clip(reach, clip, 1.0 - clip)


def ips_risk(delta: jax.Array, observed: jax.Array, propensity: jax.Array) -> jax.Array:
    """mean_D [ o delta / o_hat ]: unbiased for mean_D delta when o ~ Bernoulli(o_hat)."""
    return jnp.mean(observed * delta / propensity, axis=0)


def dr_risk(delta, observed, propensity, imputed) -> jax.Array:
    """mean_D [ e_hat + o (delta - e_hat) / o_hat ]: unbiased if either the propensity or the
    imputed error is right. Trains the prediction only: e_hat enters without gradient."""
    imputed = jax.lax.stop_gradient(imputed)
    return jnp.mean(imputed + observed * (delta - imputed) / propensity, axis=0)


def imputation_loss(delta, observed, propensity, imputed) -> jax.Array:
    """mean_D [ o (delta - e_hat)^2 / o_hat ]: the imputed error fitted where delta is seen,
    reweighted to the entire space. Trains the imputation tower only: delta enters without
    gradient (else this term pulls every prediction's error towards the imputed one)."""
    delta = jax.lax.stop_gradient(delta)
    return jnp.mean(observed * jnp.square(delta - imputed) / propensity, axis=0)


def dcmt_risk(delta, cond_logits, cf_logits, observed, converted, propensity, constraint_weight):
    """Per later stage [T-1]: factual IPS of delta on reached rows, counterfactual IPS (label
    1 - r) on the others, and the weighted mean |1 - (r_hat + r*_hat)| over all rows."""
    factual = ips_risk(delta, observed, propensity)
    counter = jnp.mean(
        (1.0 - observed) * bce_from_logits(1.0 - converted, cf_logits) / (1.0 - propensity),
        axis=0,
    )
    total = jax.nn.sigmoid(cond_logits) + jax.nn.sigmoid(cf_logits)
    return factual + counter + constraint_weight * jnp.mean(jnp.abs(1.0 - total), axis=0)


def task_loss(logits: jax.Array, extras: dict, labels: jax.Array, spec: ModelSpec, objective):
    """(scalar objective, terms) of a model's B x T logits and extras against B x T labels.

    terms: "stage_bce" [T], the entire-space BCE of every stage (every family reports it, so
    logs compare across families), "constraint" (AITM's calibrator, else 0) and "debias" (the
    counterfactual terms of the debiasing families, else 0). `objective` is the family's own
    (families.Family.objective, one of the functions below; None = the entire-space sum):
    callers go through families.family_task_loss, which looks it up.
    """
    stage_bce, constraint = task_losses(logits, labels, spec)
    zero = jnp.zeros((), stage_bce.dtype)
    terms = {"stage_bce": stage_bce, "constraint": constraint, "debias": zero}
    if objective is None:
        return jnp.sum(stage_bce) + constraint, terms
    return objective(logits, extras, labels.astype(logits.dtype), spec, terms)


class _Debias(NamedTuple):
    """What every debiasing objective reads: B x (T-1) reach labels, later-stage labels,
    propensities, conditional logits and their BCE; the CTR and CTCVR parts of stage_bce."""

    observed: jax.Array
    converted: jax.Array
    propensity: jax.Array
    cond_logits: jax.Array
    delta: jax.Array
    ctr: jax.Array
    ctcvr: jax.Array


def _debias_inputs(logits, labels, spec: ModelSpec, stage_bce) -> _Debias:
    observed, converted = labels[:, :-1], labels[:, 1:]
    cond_logits = logits[:, 1:]
    return _Debias(
        observed,
        converted,
        propensities(logits, spec.model.propensity_clip),
        cond_logits,
        bce_from_logits(converted, cond_logits),  # B x (T-1)
        stage_bce[0],
        jnp.sum(stage_bce[1:]),
    )


def dcmt_objective(logits, extras, labels, spec: ModelSpec, terms: dict):
    """(scalar loss, terms) of DCMT: CTR BCE + the later stages' entire-space BCE + the summed
    `dcmt_risk`, which also goes to terms["debias"].

    logits: B x T conditional; extras["counterfactual_logits"]: B x (T-1); labels: B x T float;
    terms: `task_loss`'s, updated in place and returned.
    """
    d = _debias_inputs(logits, labels, spec, terms["stage_bce"])
    debias = jnp.sum(
        dcmt_risk(
            d.delta,
            d.cond_logits,
            extras["counterfactual_logits"],
            d.observed,
            d.converted,
            d.propensity,
            spec.model.dcmt_constraint_weight,
        )
    )
    terms["debias"] = debias
    return d.ctr + d.ctcvr + debias, terms


def escm2_ips_objective(logits, extras, labels, spec: ModelSpec, terms: dict):
    """(scalar loss, terms) of ESCM²-IPS: CTR BCE + lambda_g x the later stages' BCE +
    lambda_c x the summed `ips_risk` (terms["debias"]); arguments as `dcmt_objective`, no
    extras read."""
    d = _debias_inputs(logits, labels, spec, terms["stage_bce"])
    debias = spec.model.escm2_counterfactual_weight * jnp.sum(
        ips_risk(d.delta, d.observed, d.propensity)
    )
    terms["debias"] = debias
    return d.ctr + spec.model.escm2_ctcvr_weight * d.ctcvr + debias, terms


def _dr_terms(extras, d: _Debias):
    imputed = extras["imputed_error"]
    dr = jnp.sum(dr_risk(d.delta, d.observed, d.propensity, imputed))
    imp = jnp.sum(imputation_loss(d.delta, d.observed, d.propensity, imputed))
    return dr, imp


def multi_dr_objective(logits, extras, labels, spec: ModelSpec, terms: dict):
    """(scalar loss, terms) of Multi-DR: CTR BCE + the summed `dr_risk` + imputation_weight x
    the summed `imputation_loss` (those two are terms["debias"]); extras["imputed_error"]:
    B x (T-1), else arguments as `dcmt_objective`."""
    d = _debias_inputs(logits, labels, spec, terms["stage_bce"])
    dr, imp = _dr_terms(extras, d)
    terms["debias"] = dr + spec.model.imputation_weight * imp
    return d.ctr + terms["debias"], terms


def escm2_dr_objective(logits, extras, labels, spec: ModelSpec, terms: dict):
    """(scalar loss, terms) of ESCM²-DR: CTR BCE + lambda_g x the later stages' BCE +
    lambda_c x (summed `dr_risk` + `imputation_loss`) (terms["debias"]); extras as
    `multi_dr_objective`."""
    d = _debias_inputs(logits, labels, spec, terms["stage_bce"])
    dr, imp = _dr_terms(extras, d)
    terms["debias"] = spec.model.escm2_counterfactual_weight * (dr + imp)
    return d.ctr + spec.model.escm2_ctcvr_weight * d.ctcvr + terms["debias"], terms
