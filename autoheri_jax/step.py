"""The training step, written once per device: `make_step_fn(...) -> step_fn(state, batch)`.

`step_fn` is pure and uses named-axis collectives over `axis` (None on one device, where they
are identities). `make_update_fn` jits it for one device; parallel.py runs the same function
under `jax.pmap` or `jax.shard_map` over a device mesh. One call updates every optax
partition (embeddings, weights, arch) from one gradient. Per-step randomness is
`fold_in(state.rng, state.step)` (and the device index for dropout), so a run is a function of
its seed and batch order alone.

Embedding rows across devices: each device differentiates the loss with respect to its own
batch's unique rows; the (row id, gradient) pairs of all devices are all-gathered, and equal ids
are merged with a segment sum, so the optimiser sees each touched row once, exactly as on one
device. With the table's row axis sharded, a device first fetches the rows it needs from their
owners (each owner contributes the rows it holds; a psum assembles them), and at update time
keeps only the rows it owns.

A non-finite loss does not corrupt the state: that step's update is skipped and the step is
recorded in `state.first_bad_step`, which the host loop turns into `NonFiniteLossError`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from autoheri_jax import sparse_rows
from autoheri_jax.config import TrainConfig
from autoheri_jax.losses import (
    edge_cost,
    edge_entropy,
    entropy_weight_at,
    op_entropy,
)
from autoheri_jax.model.network import (
    ModelSpec,
    Params,
    edge_probabilities,
    embed_from,
    forward_outputs,
    init_params,
)
from autoheri_jax.objectives import task_loss as family_task_loss
from autoheri_jax.optim import make_optimizer


class TrainState(NamedTuple):
    step: jax.Array  # int32 scalar: updates applied so far
    params: Params
    opt_state: optax.OptState
    rng: jax.Array  # base key; step keys are fold_in(rng, step)
    first_bad_step: jax.Array  # int32 scalar: first step with a non-finite loss, -1 if none
    # int32 [table rows] (sparse embeddings; [0] otherwise): sparse_rows.dedupe's scratch,
    # kept across steps so finding a batch's rows never costs O(vocabulary); it holds
    # SCRATCH_EMPTY at every step boundary, so results and checkpoints never depend on it.
    row_scratch: jax.Array


def init_state(spec: ModelSpec, cfg: TrainConfig, optimizer: optax.GradientTransformation):
    k_init, k_train = jax.random.split(jax.random.PRNGKey(cfg.seed))
    params = init_params(k_init, spec)
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=optimizer.init(params),
        rng=k_train,
        first_bad_step=jnp.full((), -1, jnp.int32),
        row_scratch=sparse_rows.new_scratch(spec.table_rows if cfg.sparse_embeddings else 0),
    )


def abstract_state(spec: ModelSpec, cfg: TrainConfig) -> TrainState:
    """Shapes and dtypes of the state, without allocating it."""
    return jax.eval_shape(lambda: init_state(spec, cfg, make_optimizer(cfg)))


def count_params(tree: Any) -> dict[str, int]:
    """Parameter count per top-level group (works on abstract shapes too)."""
    return {k: int(sum(x.size for x in jax.tree.leaves(v))) for k, v in tree.items()}


# ---------------------------------------------------------------- collectives (None = 1 device)


def _pmean(x: Any, axis: str | None) -> Any:
    return x if axis is None else jax.lax.pmean(x, axis)


def _all_gather(x: jax.Array, axis: str | None) -> jax.Array:
    return x if axis is None else jax.lax.all_gather(x, axis, tiled=True)


def _num_devices(axis: str | None) -> int:
    return 1 if axis is None else jax.lax.axis_size(axis)


def _device_index(axis: str | None) -> jax.Array:
    return jnp.zeros((), jnp.int32) if axis is None else jax.lax.axis_index(axis)


# ----------------------------------------------------------------------------------- the step


def make_loss_fn(spec: ModelSpec, cfg: TrainConfig) -> Callable:
    """loss_fn(params, batch, rng, step, embedded=None) -> (total, aux).

    The task loss is the family's objective (objectives.py): the per-stage entire-space BCE
    summed for ESMM-like models, plus AITM's calibrator (`aux["constraint"]`) or a debiasing
    family's counterfactual terms (`aux["debias"]`); `aux["stage_bce"]` is every family's
    entire-space BCE per stage, for comparable logs. The
    search adds the entropy regulariser (ramped in once the arch params start moving) and the
    sparsity cost (`sparsity_weight` x expected kept edges).
    """

    def loss_fn(params: Params, batch: dict, rng: jax.Array, step: jax.Array, embedded=None):
        dropout_rng = rng if spec.dropout > 0 else None
        logits, extras = forward_outputs(
            params, spec, batch, dropout_rng=dropout_rng, embedded=embedded
        )
        task_loss, terms = family_task_loss(logits, extras, batch["labels"], spec)
        edge_logits = params["arch"]["edge_logits"] if spec.has_arch else None
        entropy = edge_entropy(edge_logits)
        if spec.searches_ops:
            entropy = entropy + op_entropy(params["arch"]["op_logits"])
        weight = entropy_weight_at(
            step, cfg.entropy_weight, cfg.entropy_warmup_steps, cfg.arch_warmup_steps
        )
        total = task_loss + weight * entropy
        if cfg.sparsity_weight > 0:
            total = total + cfg.sparsity_weight * edge_cost(edge_logits)
        aux = {
            "loss": task_loss,
            **terms,
            "entropy": entropy,
            "total": total,
        }
        return total, aux

    return loss_fn


def _to_local(ids: jax.Array, axis: str, shard: int) -> jax.Array:
    """Global table rows -> rows of this device's shard; rows it does not own -> `shard`
    (out of range: gathers read 0, scatters drop them)."""
    local = ids - _device_index(axis) * shard
    return jnp.where((local >= 0) & (local < shard), local, shard)


def _fetch_rows(table: jax.Array, rows: jax.Array, all_rows, axis: str | None, sharded: bool):
    """[U, D] values of global rows `rows`: local gather, or assembled from their owners
    (`all_rows`: every device's rows, [n * U])."""
    if not sharded:
        return sparse_rows.gather_rows(table, rows)
    mine = _to_local(all_rows, axis, table.shape[0])
    held = jax.lax.psum(sparse_rows.gather_rows(table, mine), axis)  # each row from its owner
    me = _device_index(axis)
    return jax.lax.dynamic_slice_in_dim(held, me * rows.shape[0], rows.shape[0])


def _merge_row_grads(all_rows, g_rows, axis: str | None, shard: int | None, scratch, bound: int):
    """All devices' (row, grad) pairs -> one SparseRows with each row once (mean over devices).

    `all_rows`: every device's rows ([n * U]; this device's rows when `axis` is None).
    `shard`: rows held per device when the table is sharded (ids become local, foreign rows
    the out-of-range sentinel that every scatter drops). `bound`: distinct rows of the global
    batch at most. Returns (SparseRows, scratch).
    """
    if axis is None:
        return sparse_rows.SparseRows(all_rows, g_rows), scratch
    grads = _all_gather(g_rows, axis) / _num_devices(axis)
    uniq, inverse, _, scratch = sparse_rows.dedupe(all_rows, scratch, bound)
    merged = jax.ops.segment_sum(grads, inverse, num_segments=uniq.shape[0])
    if shard is not None:
        uniq = _to_local(uniq, axis, shard)
    return sparse_rows.SparseRows(uniq, merged), scratch


def make_grad_fn(
    spec: ModelSpec, cfg: TrainConfig, axis: str | None = None, shard_embeddings: bool = False
) -> Callable:
    """grad_fn(params, batch, rng, step, scratch) -> (aux, grads, scratch), averaged over `axis`.

    With sparse embeddings the table's gradient is `SparseRows` over the touched rows: the loss
    is differentiated with respect to those rows only, never the whole table. `scratch` is
    `TrainState.row_scratch` (returned unchanged with dense embeddings).
    """
    loss_fn = make_loss_fn(spec, cfg)
    if shard_embeddings and not cfg.sparse_embeddings:
        raise ValueError("sharded embedding tables need sparse_embeddings=True")

    def grad_fn(params: Params, batch: dict, rng: jax.Array, step: jax.Array, scratch):
        if not cfg.sparse_embeddings:
            (_, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch, rng, step)
            return _pmean(aux, axis), _pmean(grads, axis), scratch
        rows, single, bags, _, scratch = sparse_rows.unique_lookup_rows(spec, batch, scratch)
        table = params["embedding"]["table"]
        all_rows = _all_gather(rows, axis)  # gathered once: fetch and merge both need it
        table_rows = _fetch_rows(table, rows, all_rows, axis, shard_embeddings)
        others = {k: v for k, v in params.items() if k != "embedding"}

        def on_rows(others, table_rows):
            embedded = embed_from(table_rows, spec, batch, single, bags)
            return loss_fn(others, batch, rng, step, embedded=embedded)

        grad = jax.value_and_grad(on_rows, argnums=(0, 1), has_aux=True)
        (_, aux), (g_others, g_rows) = grad(others, table_rows)
        shard = table.shape[0] if shard_embeddings else None
        bag_len = 0 if bags is None else bags.shape[-1]
        global_bound = sparse_rows.unique_row_bound(
            spec, single.shape[0] * _num_devices(axis), bag_len
        )
        g_table, scratch = _merge_row_grads(all_rows, g_rows, axis, shard, scratch, global_bound)
        grads = {**_pmean(g_others, axis), "embedding": {"table": g_table}}
        return _pmean(aux, axis), grads, scratch

    return grad_fn


def make_step_fn(
    spec: ModelSpec,
    cfg: TrainConfig,
    optimizer: optax.GradientTransformation,
    axis: str | None = None,
    shard_embeddings: bool = False,
) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
    """The pure per-device step; `axis` names the data-parallel mesh axis (None: one device)."""
    grad_fn = make_grad_fn(spec, cfg, axis, shard_embeddings)

    def step_fn(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        rng = jax.random.fold_in(jax.random.fold_in(state.rng, state.step), _device_index(axis))
        aux, grads, scratch = grad_fn(state.params, batch, rng, state.step, state.row_scratch)
        if cfg.bilevel:
            # First-order bi-level (DARTS-1st): the arch partition takes its gradient from a
            # held-out batch at the current weights; the weights keep the training gradient.
            aux_v, grads_v, scratch = grad_fn(
                state.params, batch["valid"], rng, state.step, scratch
            )
            grads = {**grads, "arch": grads_v["arch"]}
            aux["valid_loss"] = aux_v["loss"]
            aux["total"] = aux["total"] + aux_v["total"]  # either non-finite stops the run
        finite = jnp.isfinite(aux["total"])

        def apply(params, opt_state):
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return sparse_rows.apply_updates(params, updates), opt_state

        # `cond`, not `where`: selecting between whole tables would cost O(vocabulary).
        params, opt_state = jax.lax.cond(
            finite, apply, lambda p, o: (p, o), state.params, state.opt_state
        )
        first_bad = jnp.where(
            (state.first_bad_step < 0) & ~finite, state.step, state.first_bad_step
        )
        aux["edge_probs"] = edge_probabilities(params, spec)  # after this step's update
        return TrainState(state.step + 1, params, opt_state, state.rng, first_bad, scratch), aux

    return step_fn


def make_update_fn(spec: ModelSpec, cfg: TrainConfig, optimizer: optax.GradientTransformation):
    """The single-device step, jitted with the state donated."""
    return jax.jit(make_step_fn(spec, cfg, optimizer), donate_argnums=0)
