"""The entire-space multi-task baselines, as pure functions over the "towers" params subtree.

Every family reads the same embedded input x: B x input_dim (see network.py) and returns
(B x T logits, extras), one logit per funnel stage; the embedding table, the data path, the
trainer and the entire-space labels are shared with AutoHERI. All of a family's weights live
under params["towers"], so the optimiser routes them to the weights partition. `extras` holds
outputs only a family's loss reads (objectives.py); it is {} for the families here.

  shared_bottom  one MLP `bottom_hidden` over x, then a `tower_hidden` tower and a head per task.
  mmoe           `num_experts` expert MLPs `expert_hidden` over x; task t mixes them with
                 softmax(x @ G_t) (B x E weights), then its tower and head.
  ple            `levels` CGC levels. Level l has `task_experts` experts per task and
                 `shared_experts` shared ones. Task t's gate (over its own and the shared
                 experts) and the shared gate (over every expert; inner levels only) read
                 that branch's input to the level: x at level 0, the previous level's mix after.
                 The last level's task outputs feed the towers and heads.
  aitm           one `hidden` tower per task gives q_t. From the second task on, the transferred
                 p_{t-1} = act(z_{t-1} @ W + b) from the previous task's output z_{t-1}
                 (z_0 = q_0) and q_t are attended over: item u in {p_{t-1}, q_t} scores
                 <u Q, u K> / sqrt(d), a softmax over the 2 items weights u V, and the weighted
                 sum z_t feeds task t's head.

DBMTL, GMSL and ESM² live in funnel_families.py; the debiasing families (Multi-DR, ESCM², DCMT)
in causal_families.py. `FAMILIES` registers them all with their logit kind: "conditional"
(P(stage t | stage t-1), chained by the entire-space loss as for ESMM) or "entire" (P_t
itself: AITM, ESM²), and the funnel depth they need.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from autoheri_jax import rng
from autoheri_jax.model import causal_families, funnel_families, objectives
from autoheri_jax.model.blocks import (
    Act,
    Towers,
    dense,
    dropper,
    glorot,
    heads_apply,
    heads_init,
    mlp_apply,
    mlp_init,
    out_dim,
)
from autoheri_jax.model.spec import ModelSpec

# ------------------------------------------------------------------------------ shared bottom


def _init_shared_bottom(key: jax.Array, spec: ModelSpec) -> Towers:
    k_bottom, k_towers, k_heads = jax.random.split(key, 3)
    d = spec.model.bottom_hidden[-1]
    return {
        "bottom": mlp_init(k_bottom, 1, spec.input_dim, spec.model.bottom_hidden),
        "tower": mlp_init(k_towers, spec.num_tasks, d, spec.model.tower_hidden),
        "head": heads_init(k_heads, spec.num_tasks, out_dim(spec.model.tower_hidden, d)),
    }


def _shared_bottom(towers: Towers, spec: ModelSpec, x: jax.Array, act: Act, drop) -> jax.Array:
    shared = mlp_apply(towers["bottom"], x, act, drop)  # B x 1 x d
    per_task = jnp.broadcast_to(shared, (x.shape[0], spec.num_tasks, shared.shape[-1]))
    return heads_apply(towers["head"], mlp_apply(towers["tower"], per_task, act, drop))


# ------------------------------------------------------------------------------ MMoE


def _init_mmoe(key: jax.Array, spec: ModelSpec) -> Towers:
    k_exp, k_gate, k_towers, k_heads = jax.random.split(key, 4)
    d = spec.model.expert_hidden[-1]
    return {
        "experts": mlp_init(
            k_exp, spec.model.num_experts, spec.input_dim, spec.model.expert_hidden
        ),
        "gates": dense(k_gate, spec.num_tasks, spec.input_dim, spec.model.num_experts),
        "tower": mlp_init(k_towers, spec.num_tasks, d, spec.model.tower_hidden),
        "head": heads_init(k_heads, spec.num_tasks, out_dim(spec.model.tower_hidden, d)),
    }


def mmoe_gate_weights(towers: Towers, x: jax.Array) -> jax.Array:
    """[B, T, num_experts] softmax weights of each task's gate over the experts, from x:
    B x input_dim (rows sum to 1)."""
    gates = towers["gates"]
    return jax.nn.softmax(jnp.einsum("bi,tie->bte", x, gates["kernel"]) + gates["bias"], axis=-1)


def _mmoe(towers: Towers, spec: ModelSpec, x: jax.Array, act: Act, drop) -> jax.Array:
    experts = mlp_apply(towers["experts"], x, act, drop)  # B x E x d
    mixed = jnp.einsum("bte,bed->btd", mmoe_gate_weights(towers, x), experts)  # B x T x d
    return heads_apply(towers["head"], mlp_apply(towers["tower"], mixed, act, drop))


# ------------------------------------------------------------------------------ PLE


def _ple_task_expert_index(spec: ModelSpec) -> np.ndarray:
    """T x (K + S) rows of a level's expert stack that task t's gate mixes: its own, then shared.

    A level's stack holds task 0's K experts, task 1's, ..., then the S shared experts.
    """
    k, t_count = spec.model.task_experts, spec.num_tasks
    shared = list(range(t_count * k, t_count * k + spec.model.shared_experts))
    return np.array([list(range(t * k, (t + 1) * k)) + shared for t in range(t_count)])


def _init_ple(key: jax.Array, spec: ModelSpec) -> Towers:
    t_count, k, s = spec.num_tasks, spec.model.task_experts, spec.model.shared_experts
    d = spec.model.expert_hidden[-1]
    towers: Towers = {}
    for level in range(spec.model.levels):
        k_level = rng.stream(key, "mlp_layer", level)
        n_in = spec.input_dim if level == 0 else d
        part = {
            "experts": mlp_init(k_level, t_count * k + s, n_in, spec.model.expert_hidden),
            "task_gates": dense(rng.stream(k_level, "ple_task_gates"), t_count, n_in, k + s),
        }
        if level < spec.model.levels - 1:
            part["shared_gate"] = dense(
                rng.stream(k_level, "ple_shared_gate"), 1, n_in, t_count * k + s
            )
        towers[f"level_{level}"] = part
    k_towers, k_heads = jax.random.split(rng.stream(key, "mlp_layer", spec.model.levels))
    towers["tower"] = mlp_init(k_towers, t_count, d, spec.model.tower_hidden)
    towers["head"] = heads_init(k_heads, t_count, out_dim(spec.model.tower_hidden, d))
    return towers


def _ple(towers: Towers, spec: ModelSpec, x: jax.Array, act: Act, drop) -> jax.Array:
    t_count, k, s = spec.num_tasks, spec.model.task_experts, spec.model.shared_experts
    own = jnp.asarray(_ple_task_expert_index(spec))  # T x (K + S)
    task_in = jnp.broadcast_to(x[:, None], (x.shape[0], t_count, x.shape[-1]))  # B x T x in
    shared_in = x  # B x in
    for level in range(spec.model.levels):
        part = towers[f"level_{level}"]
        # Each expert reads its branch's input: task t's K experts task_in[:, t], shared ones
        # shared_in; B x (T*K + S) x in.
        expert_in = jnp.concatenate(
            [
                jnp.repeat(task_in, k, axis=1),
                jnp.broadcast_to(shared_in[:, None], (x.shape[0], s, shared_in.shape[-1])),
            ],
            axis=1,
        )
        experts = mlp_apply(part["experts"], expert_in, act, drop)  # B x (T*K + S) x d
        g = part["task_gates"]
        task_w = jax.nn.softmax(
            jnp.einsum("bti,tie->bte", task_in, g["kernel"]) + g["bias"], axis=-1
        )  # B x T x (K + S)
        new_task = jnp.einsum("bte,bted->btd", task_w, experts[:, own])  # B x T x d
        if "shared_gate" in part:
            sg = part["shared_gate"]
            shared_w = jax.nn.softmax(shared_in @ sg["kernel"][0] + sg["bias"][0], axis=-1)
            shared_in = jnp.einsum("be,bed->bd", shared_w, experts)  # B x d
        task_in = new_task
    return heads_apply(towers["head"], mlp_apply(towers["tower"], task_in, act, drop))


# ------------------------------------------------------------------------------ AITM


def _init_aitm(key: jax.Array, spec: ModelSpec) -> Towers:
    t_count, d = spec.num_tasks, spec.model.hidden[-1]
    k_towers, k_info, k_att, k_heads = jax.random.split(key, 4)
    towers = {
        "tower": mlp_init(k_towers, t_count, spec.input_dim, spec.model.hidden),
        "head": heads_init(k_heads, t_count, d),
    }
    if t_count > 1:  # one transfer per adjacent pair (t-1 -> t), stacked over T - 1
        towers["info"] = dense(k_info, t_count - 1, d, d)
        towers["attention"] = {
            name: glorot(rng.stream(k_att, "aitm_projection", i), (t_count - 1, d, d))
            for i, name in enumerate(("query", "key", "value"))
        }
    return towers


def ait_attention(attention: dict, pair: int, items: jax.Array) -> tuple[jax.Array, jax.Array]:
    """items: B x 2 x d ([p_{t-1}, q_t]) -> (z_t: B x d, weights: B x 2, summing to 1).

    Each item scores <u Q, u K> / sqrt(d); the softmax over the 2 items weights u V.
    """
    q, k, v = (items @ attention[name][pair] for name in ("query", "key", "value"))
    scores = jnp.sum(q * k, axis=-1) / math.sqrt(items.shape[-1])  # B x 2
    weights = jax.nn.softmax(scores, axis=-1)
    return jnp.einsum("bu,bud->bd", weights, v), weights


def _aitm(towers: Towers, spec: ModelSpec, x: jax.Array, act: Act, drop) -> jax.Array:
    q = mlp_apply(towers["tower"], x, act, drop)  # B x T x d
    outputs = [q[:, 0]]
    for t in range(1, spec.num_tasks):
        info = towers["info"]
        p = act(outputs[-1] @ info["kernel"][t - 1] + info["bias"][t - 1])  # B x d
        z, _ = ait_attention(towers["attention"], t - 1, jnp.stack([p, q[:, t]], axis=1))
        outputs.append(z)
    return heads_apply(towers["head"], jnp.stack(outputs, axis=1))


# ------------------------------------------------------------------------------ dispatch


class Family(NamedTuple):
    """One baseline family, registered once: its functions and what build.py needs to know."""

    init: Callable  # (key, spec) -> params["towers"]
    apply: Callable  # (towers, spec, x, act, drop) -> (B x T logits, extras)
    # (logits, extras, labels, spec, terms) -> (loss, terms), from objectives.py; None = the
    # entire-space BCE summed over stages (ESMM's, plus AITM's calibrator)
    objective: Callable | None = None
    output: str = "conditional"  # logit t: P(stage t | stage t-1), or "entire": P(stage t)
    stages: tuple[int, ...] = ()  # funnel depths it is defined for; () = any


def _no_extras(fn: Callable) -> Callable:
    return lambda *args: (fn(*args), {})


_OBJECTIVES = {  # the debiasing families' objectives
    "multi_dr": objectives.multi_dr_objective,
    "escm2_ips": objectives.escm2_ips_objective,
    "escm2_dr": objectives.escm2_dr_objective,
    "dcmt": objectives.dcmt_objective,
}

FAMILIES: dict[str, Family] = {  # "autoheri" is network.py's own towers; settings: model/config.py
    "shared_bottom": Family(_init_shared_bottom, _no_extras(_shared_bottom)),
    "mmoe": Family(_init_mmoe, _no_extras(_mmoe)),
    "ple": Family(_init_ple, _no_extras(_ple)),
    "aitm": Family(_init_aitm, _no_extras(_aitm), output="entire"),
    "dbmtl": Family(funnel_families.init_dbmtl, funnel_families.dbmtl),
    "gmsl": Family(funnel_families.init_gmsl, funnel_families.gmsl),
    "esm2": Family(funnel_families.init_esm2, funnel_families.esm2, output="entire", stages=(3,)),
    **{
        name: Family(causal_families.init_causal, causal_families.causal, objective=objective)
        for name, objective in _OBJECTIVES.items()
    },
}


def init_family(key: jax.Array, spec: ModelSpec) -> Towers:
    """Fresh params["towers"] of `spec.model.family` (any family but autoheri)."""
    return FAMILIES[spec.model.family].init(key, spec)


def family_task_loss(logits: jax.Array, extras: dict, labels: jax.Array, spec: ModelSpec):
    """(scalar objective, terms) of any family's B x T logits and extras against B x T
    labels (objectives.task_loss with the family's registered objective; autoheri's is the
    entire-space sum)."""
    info = FAMILIES.get(spec.model.family)
    return objectives.task_loss(
        logits, extras, labels, spec, None if info is None else info.objective
    )


def family_outputs(
    towers: Towers, spec: ModelSpec, x: jax.Array, act: Act, dropout_rng: jax.Array | None
) -> tuple[jax.Array, dict]:
    """x: B x input_dim -> (B x T logits, the family's extra outputs for its loss)."""
    return FAMILIES[spec.model.family].apply(towers, spec, x, act, dropper(spec, dropout_rng))
