"""Baselines that model the funnel's order inside the network: DBMTL, GMSL and ESM².

Each reads the shared embedded input x: B x input_dim and returns (B x T logits, {}), like
families.py's. Where a published description leaves a choice open, the choice is named here.

  dbmtl  Deep Bayesian Multi-Target Learning (Alibaba, arXiv 1902.09154): the joint
         p(t_1, t_2 | x) = p(t_2 | t_1, x) p(t_1 | x) becomes a network in which target t's
         output layer reads its own tower and the previous target's output representation.
         Here: a shared bottom MLP `bottom_hidden`, a `tower_hidden` tower per stage giving
         h_t, then a "relation" layer r_t = act([h_t, r_{t-1}] @ R_t + b_t) for t >= 1 (r_0 =
         h_0) and a head per stage over r_t. Logits are conditional, P(stage t | stage t-1),
         chained by the entire-space loss (the issue's "entire-space training" of every family;
         the paper trains each target's BCE on all samples, which for a funnel is the same set
         of labels).
  gmsl   Gated multi-step learning: a recurrent cell carries state from one funnel stage to the
         next. Here: a `hidden` tower per stage gives q_t (B x d); one GRU cell, shared by all
         steps, reads them in funnel order, s_t = GRU(q_t, s_{t-1}) with s_{-1} = 0, and stage
         t's head reads s_t. So conversion sees click's state through the GRU's gates, and
         click sees nothing downstream. Logits are conditional, chained as for ESMM.
  esm2   ESM² (Wen et al., SIGIR 2020): impression -> click -> {deterministic action (D-Action),
         other action (O-Action)} -> purchase, four heads y_1 = pCTR, y_2 = p(D-Action | click),
         y_3 = p(buy | D-Action), y_4 = p(buy | O-Action), and the path probabilities
             P(click) = y_1,  P(click, D-Action) = y_1 y_2,
             P(click, buy) = y_1 (y_2 y_3 + (1 - y_2) y_4),
         each trained with BCE over all impressions (weights 1). It needs a 3-stage funnel
         (click, action, purchase): the simulator's three-stage funnel is used, its middle
         stage (activation) as D-Action. That funnel is strict (a conversion needs an
         activation), so the O-Action path has only negatives and y_4 learns to be near 0;
         it is kept as the paper has it. Logits are entire-space, logit(P_t) formed in log
         space; the conditional rate of each stage is the head that models it given the
         stage before (y_1, y_2 = P(D-Action | click), y_3 = P(buy | D-Action)), passed as
         extras["conditional_logits"], since P_2 / P_1 also counts the O-Action path and can
         exceed 1 (ESM² does not order D-Action and purchase).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from autoheri_jax.model.blocks import (
    Act,
    Towers,
    dense,
    glorot,
    heads_apply,
    heads_init,
    mlp_apply,
    mlp_init,
    out_dim,
)
from autoheri_jax.model.spec import ModelSpec

ESM2_HEADS = ("ctr", "d_action", "buy_after_d_action", "buy_after_o_action")


# ------------------------------------------------------------------------------ DBMTL


def init_dbmtl(key: jax.Array, spec: ModelSpec) -> Towers:
    """Fresh DBMTL params: a shared "bottom" MLP, T "tower"s and heads, and with T > 1 a
    "relation" layer (T-1 x 2d x d) joining each stage to the one before it."""
    k_bottom, k_towers, k_rel, k_heads = jax.random.split(key, 4)
    d_bottom = spec.model.bottom_hidden[-1]
    d = out_dim(spec.model.tower_hidden, d_bottom)
    towers = {
        "bottom": mlp_init(k_bottom, 1, spec.input_dim, spec.model.bottom_hidden),
        "tower": mlp_init(k_towers, spec.num_tasks, d_bottom, spec.model.tower_hidden),
        "head": heads_init(k_heads, spec.num_tasks, d),
    }
    if spec.num_tasks > 1:  # one relation layer per stage after the first
        towers["relation"] = dense(k_rel, spec.num_tasks - 1, 2 * d, d)
    return towers


def dbmtl(towers: Towers, spec: ModelSpec, x: jax.Array, act: Act, drop):
    """x: B x input_dim -> (B x T conditional logits, {}); stage t's head reads its tower's
    output joined with stage t-1's related output."""
    shared = mlp_apply(towers["bottom"], x, act, drop)  # B x 1 x d_bottom
    per_task = jnp.broadcast_to(shared, (x.shape[0], spec.num_tasks, shared.shape[-1]))
    h = mlp_apply(towers["tower"], per_task, act, drop)  # B x T x d
    related = [h[:, 0]]
    for t in range(1, spec.num_tasks):
        rel = towers["relation"]
        joined = jnp.concatenate([h[:, t], related[-1]], axis=-1)  # B x 2d
        related.append(drop(act(joined @ rel["kernel"][t - 1] + rel["bias"][t - 1])))
    return heads_apply(towers["head"], jnp.stack(related, axis=1)), {}


# ------------------------------------------------------------------------------ GMSL


def init_gmsl(key: jax.Array, spec: ModelSpec) -> Towers:
    """Fresh GMSL params: T `hidden` towers, one GRU cell (d = hidden[-1]) and T heads."""
    k_towers, k_in, k_rec, k_heads = jax.random.split(key, 4)
    d = spec.model.hidden[-1]
    return {
        "tower": mlp_init(k_towers, spec.num_tasks, spec.input_dim, spec.model.hidden),
        # GRU gates [update z | reset r | candidate n] side by side: d x 3d each
        "gru": {
            "input": glorot(k_in, (1, d, 3 * d))[0],
            "recurrent": glorot(k_rec, (1, d, 3 * d))[0],
            "bias": jnp.zeros((3 * d,), jnp.float32),
        },
        "head": heads_init(k_heads, spec.num_tasks, d),
    }


def gru_cell(gru: dict, q: jax.Array, s: jax.Array) -> jax.Array:
    """One GRU step: input q and state s, both B x d -> the new state, B x d.

    z = sigmoid(q Wz + s Uz + bz), r = sigmoid(q Wr + s Ur + br),
    n = tanh(q Wn + r * (s Un) + bn), s' = (1 - z) * n + z * s.
    """
    d = s.shape[-1]
    from_q = q @ gru["input"] + gru["bias"]
    from_s = s @ gru["recurrent"]
    z = jax.nn.sigmoid(from_q[:, :d] + from_s[:, :d])
    r = jax.nn.sigmoid(from_q[:, d : 2 * d] + from_s[:, d : 2 * d])
    n = jnp.tanh(from_q[:, 2 * d :] + r * from_s[:, 2 * d :])
    return (1.0 - z) * n + z * s


def gmsl(towers: Towers, spec: ModelSpec, x: jax.Array, act: Act, drop):
    """x: B x input_dim -> (B x T conditional logits, {}); a GRU runs over the stages' tower
    outputs in funnel order and stage t's head reads its state."""
    q = mlp_apply(towers["tower"], x, act, drop)  # B x T x d
    state = jnp.zeros_like(q[:, 0])
    states = []
    for t in range(spec.num_tasks):  # funnel order: click first
        state = gru_cell(towers["gru"], q[:, t], state)
        states.append(state)
    return heads_apply(towers["head"], jnp.stack(states, axis=1)), {}


# ------------------------------------------------------------------------------ ESM²


def init_esm2(key: jax.Array, spec: ModelSpec) -> Towers:
    """Fresh ESM2 params: one `hidden` tower and head per ESM2_HEADS entry (4)."""
    k_towers, k_heads = jax.random.split(key)
    return {
        "tower": mlp_init(k_towers, len(ESM2_HEADS), spec.input_dim, spec.model.hidden),
        "head": heads_init(k_heads, len(ESM2_HEADS), spec.model.hidden[-1]),
    }


def log1mexp(a: jax.Array) -> jax.Array:
    """log(1 - exp(a)) for a <= 0, accurate at both ends (expm1 near 0, log1p far below)."""
    a = jnp.minimum(a, -1e-30)
    return jnp.where(a > -0.6931472, jnp.log(-jnp.expm1(a)), jnp.log1p(-jnp.exp(a)))


def esm2_log_paths(head_logits: jax.Array) -> jax.Array:
    """B x 4 head logits (ESM2_HEADS order) -> B x 3 log P(click), log P(click, D-Action),
    log P(click, buy), each a sum of log-sigmoids (log P(buy | click) a logaddexp of the two
    paths), so no probability is formed and rounded on the way."""
    ls = jax.nn.log_sigmoid
    y1, y2, y3, y4 = (head_logits[:, i] for i in range(4))
    click = ls(y1)
    d_action = click + ls(y2)
    buy = click + jnp.logaddexp(ls(y2) + ls(y3), ls(-y2) + ls(y4))
    return jnp.stack([click, d_action, buy], axis=1)


def esm2(towers: Towers, spec: ModelSpec, x: jax.Array, act: Act, drop):
    """x: B x input_dim -> (B x 3 entire-space logits of click, D-Action and buy,
    {"conditional_logits": B x 3, heads 0-2})."""
    heads = heads_apply(towers["head"], mlp_apply(towers["tower"], x, act, drop))  # B x 4
    log_p = esm2_log_paths(heads)
    # logit(P_t) = log P_t - log(1 - P_t); the conditional rates are heads y_1, y_2, y_3
    return log_p - log1mexp(log_p), {"conditional_logits": heads[:, :3]}
