"""Towers of the debiasing baselines: Multi-DR, ESCM² (IPS and DR) and DCMT.

All four keep ESMM's network, one `hidden` tower and head per funnel stage over the shared
embedded input x (B x input_dim), with conditional logits; they differ from ESMM in the loss
(objectives.py), and some add towers of the same widths whose output only the loss reads:

  imputation      (multi_dr, escm2_dr) one per later stage k: the imputed error e_hat of the
                  stage-k prediction on every impression, the doubly robust estimator's
                  stand-in for the BCE it can only observe on rows that reached stage k-1.
  counterfactual  (dcmt) one per later stage k: the counterfactual head r*_k, DCMT's estimate
                  on the rows that did not reach stage k-1, tied to the factual head by
                  r + r* ~= 1.

Every tower and head is one group of a stacked MLP (blocks.py): groups 0 .. T-1 are the stages,
T .. 2T-2 the extra towers, so the forward pass is still one einsum per layer. The apply
returns (B x T logits, extras) with extras {"imputed_error": B x (T-1)} or
{"counterfactual_logits": B x (T-1)} (empty for escm2_ips).
"""

from __future__ import annotations

import jax

from autoheri_jax.model.blocks import Act, Towers, heads_apply, heads_init, mlp_apply, mlp_init
from autoheri_jax.model.spec import ModelSpec

# family -> the name of its extra per-later-stage output (None: ESMM's towers only)
EXTRA_OUTPUT = {
    "multi_dr": "imputed_error",
    "escm2_ips": None,
    "escm2_dr": "imputed_error",
    "dcmt": "counterfactual_logits",
}


def _groups(spec: ModelSpec) -> int:
    extra = EXTRA_OUTPUT[spec.model.family] is not None
    return spec.num_tasks + (spec.num_tasks - 1 if extra else 0)


def init_causal(key: jax.Array, spec: ModelSpec) -> Towers:
    """Fresh {"tower", "head"} params: G = T stage groups, plus T - 1 extra groups when the
    family has an extra output (EXTRA_OUTPUT), each a `hidden` MLP over input_dim."""
    k_towers, k_heads = jax.random.split(key)
    return {
        "tower": mlp_init(k_towers, _groups(spec), spec.input_dim, spec.model.hidden),
        "head": heads_init(k_heads, _groups(spec), spec.model.hidden[-1]),
    }


def causal(towers: Towers, spec: ModelSpec, x: jax.Array, act: Act, drop):
    """x: B x input_dim -> (B x T conditional logits, extras): {"imputed_error": B x (T-1)}
    (softplus, >= 0), {"counterfactual_logits": B x (T-1)}, or {} for escm2_ips."""
    out = heads_apply(towers["head"], mlp_apply(towers["tower"], x, act, drop))  # B x G
    name = EXTRA_OUTPUT[spec.model.family]
    logits = out[:, : spec.num_tasks]
    if name is None:
        return logits, {}
    extra = out[:, spec.num_tasks :]
    if name == "imputed_error":  # an error (a BCE) is >= 0
        extra = jax.nn.softplus(extra)
    return logits, {name: extra}
