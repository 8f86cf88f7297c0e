"""The training step, written once per device: `make_step_fn(...) -> step_fn(state, batch)`.

`step_fn` is pure and uses named-axis collectives over `axis` (None on one device, where they
are identities). `make_update_fn` jits it for one device; parallel.py's mesh launcher jits the
same axis-free step over a device mesh (XLA partitions it), and runs the per-device step
(`axis` set) under `jax.shard_map` (row-sharded tables) or `jax.pmap`. One call updates every
optax partition (embeddings, weights, arch) from one gradient. Per-step randomness is
`fold_in(state.rng, state.step)` (and the device index for dropout: 0 wherever one program
covers the global batch), so a run is a function of its seed and batch order alone.

Embedding rows across devices (per-device programs: shard_map, pmap): each device differentiates
the loss with respect to its own batch's unique rows; the (row id, gradient) pairs of all
devices are all-gathered, and equal ids are merged with a segment sum, so the optimiser sees
each touched row once, exactly as on one device. With the table's row axis sharded, a device
first fetches the rows it needs from their owners (each owner contributes the rows it holds; a
psum assembles them), and at update time keeps only the rows it owns.

A non-finite loss does not corrupt the state: that step's update is skipped and the step is
recorded in `state.first_bad_step`, which the host loop turns into `NonFiniteLossError`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from autoheri_jax import rng as rng_streams
from autoheri_jax.config import ConfigError, TrainConfig, arch_of, edge_keep_prob, is_bilevel
from autoheri_jax.model.families import family_task_loss
from autoheri_jax.model.gates import (
    edge_cost,
    edge_entropy,
    edge_probabilities,
    entropy_weight_at,
    op_entropy,
)
from autoheri_jax.model.network import forward_outputs, init_params
from autoheri_jax.model.spec import ModelSpec, Params
from autoheri_jax.train import sparse_embedding
from autoheri_jax.train.collectives import device_index, pmean
from autoheri_jax.train.optim import make_optimizer


class TrainState(NamedTuple):
    """Everything a training run carries from step to step (and checkpoints)."""

    step: jax.Array  # int32 scalar: updates applied so far
    params: Params
    opt_state: optax.OptState
    rng: jax.Array  # typed key (key<fry>[], threefry2x32); step keys are fold_in(rng, step)
    first_bad_step: jax.Array  # int32 scalar: first step with a non-finite loss, -1 if none
    # int32 [table rows] (sparse embeddings; [0] otherwise): sparse_embedding.dedupe's scratch,
    # kept across steps so finding a batch's rows never costs O(vocabulary); it holds
    # SCRATCH_EMPTY at every step boundary, so results and checkpoints never depend on it.
    row_scratch: jax.Array


def init_keys(seed: int) -> tuple[jax.Array, jax.Array]:
    """(weights' init key, the run's base key for step keys) of a run with this seed: typed
    keys (`jax.random.key`, the default threefry2x32 impl, so the bits are those the legacy
    uint32[2] `PRNGKey(seed)` gave)."""
    k_init, k_train = jax.random.split(jax.random.key(seed))
    return k_init, k_train


def init_state(spec: ModelSpec, cfg: TrainConfig, optimizer: optax.GradientTransformation):
    """The TrainState at step 0: fresh params from cfg.seed (a supernet's edge logits from
    its arch settings), `optimizer`'s initial state, the row scratch sized for sparse
    embeddings; ConfigError for a searched spec without arch settings."""
    arch = arch_of(cfg)
    if spec.has_arch and arch is None:
        raise ConfigError(
            "a model with arch params (a searched supernet) trains under a SupernetConfig "
            "whose `arch` holds the arch partition's settings; got none"
        )
    k_init, k_train = init_keys(cfg.seed)
    if arch is None:
        params = init_params(k_init, spec)
    else:
        params = init_params(k_init, spec, arch.init_edge_logit, arch.edge_logit_noise)
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=optimizer.init(params),
        rng=k_train,
        first_bad_step=jnp.full((), -1, jnp.int32),
        row_scratch=sparse_embedding.new_scratch(spec.table_rows if cfg.sparse_embeddings else 0),
    )


def abstract_state(spec: ModelSpec, cfg: TrainConfig) -> TrainState:
    """Shapes and dtypes of the state, without allocating it."""
    return jax.eval_shape(lambda: init_state(spec, cfg, make_optimizer(cfg)))


def count_params(tree: Any) -> dict[str, int]:
    """Parameter count per top-level group (works on abstract shapes too)."""
    return {k: int(sum(x.size for x in jax.tree.leaves(v))) for k, v in tree.items()}


def step_edge_mask(spec: ModelSpec, cfg: TrainConfig, step_key: jax.Array) -> jax.Array | None:
    """[E] the step's 0/1 edge mask of a masked supernet (`edge_keep_prob(cfg)` > 0): every edge
    on with that probability, one draw per step for the whole batch, from the step key (so
    every device draws the same sub-network). None when the step trains the spec's own gates."""
    keep = edge_keep_prob(cfg)
    if keep <= 0 or spec.num_edges == 0:
        return None
    key = rng_streams.stream(step_key, "edge_mask")
    return jax.random.bernoulli(key, keep, (spec.num_edges,)).astype(jnp.float32)


# ----------------------------------------------------------------------------------- the step


def make_loss_fn(spec: ModelSpec, cfg: TrainConfig) -> Callable:
    """loss_fn(params, batch, rng, step, embedded=None, gates=None) -> (total, aux).

    gates [E]: the edge gates the forward uses instead of the arch params' (a mask of a
    masked supernet step or of an architecture batch); None = `edge_probabilities`.

    The task loss is the family's objective (objectives.py): the per-stage entire-space BCE
    summed for ESMM-like models, plus AITM's calibrator (`aux["constraint"]`) or a debiasing
    family's counterfactual terms (`aux["debias"]`); `aux["stage_bce"]` is every family's
    entire-space BCE per stage, for comparable logs. The
    search adds the entropy regulariser (ramped in once the arch params start moving) and the
    sparsity cost (`sparsity_weight` x expected kept edges).
    """

    search = arch_of(cfg)  # the gated search's arch settings (entropy, sparsity); None: none

    def loss_fn(
        params: Params, batch: dict, rng: jax.Array, step: jax.Array, embedded=None, gates=None
    ):
        dropout_rng = rng if spec.model.dropout > 0 else None
        logits, extras = forward_outputs(
            params, spec, batch, dropout_rng=dropout_rng, embedded=embedded, gates=gates
        )
        task_loss, terms = family_task_loss(logits, extras, batch["labels"], spec)
        edge_logits = params["arch"]["edge_logits"] if spec.has_arch else None
        entropy = edge_entropy(edge_logits)
        if spec.searches_ops:
            entropy = entropy + op_entropy(params["arch"]["op_logits"])
        weight = 0.0  # a plain TrainConfig: no arch params, no regulariser
        if search is not None:
            weight = entropy_weight_at(
                step, search.entropy_weight, search.entropy_warmup_steps, search.arch_warmup_steps
            )
        total = task_loss + weight * entropy
        if search is not None and search.sparsity_weight > 0:
            total = total + search.sparsity_weight * edge_cost(edge_logits)
        aux = {
            "loss": task_loss,
            **terms,
            "entropy": entropy,
            "total": total,
        }
        return total, aux

    return loss_fn


def make_grad_fn(
    spec: ModelSpec, cfg: TrainConfig, axis: str | None = None, shard_embeddings: bool = False
) -> Callable:
    """grad_fn(params, batch, rng, step, scratch, gates=None) -> (aux, grads, scratch),
    averaged over `axis`; gates as in `make_loss_fn`.

    With sparse embeddings the table's gradient is `SparseRows` over the touched rows: the loss
    is differentiated with respect to those rows only, never the whole table. `scratch` is
    `TrainState.row_scratch` (returned unchanged with dense embeddings). ValueError for
    `shard_embeddings` without sparse embeddings.
    """
    loss_fn = make_loss_fn(spec, cfg)
    if shard_embeddings and not cfg.sparse_embeddings:
        raise ValueError("sharded embedding tables need sparse_embeddings=True")

    def grad_fn(params: Params, batch: dict, rng: jax.Array, step: jax.Array, scratch, gates=None):
        def loss_on(p: Params, embedded: jax.Array | None = None):
            return loss_fn(p, batch, rng, step, embedded=embedded, gates=gates)

        if cfg.sparse_embeddings:
            return sparse_embedding.value_and_grad(
                loss_on, params, spec, batch, scratch, axis, shard_embeddings, cfg.bag_slots
            )
        (_, aux), grads = jax.value_and_grad(loss_on, has_aux=True)(params)
        return pmean(aux, axis), pmean(grads, axis), scratch

    return grad_fn


class StepParts(NamedTuple):
    """The step in three pure parts, so a caller can decide where the finite-loss guard sits.

    gradients(state, batch, gates=None) -> (aux, grads, scratch): the loss and every
        partition's gradient (a bi-level search's arch gradient from batch["valid"]).
    apply(params, opt_state, grads) -> (params, opt_state): the optimiser update.
    finish(state, params, opt_state, scratch, aux) -> (state, aux): the next state, the
        first non-finite step recorded, the edge probabilities after the update.
    """

    gradients: Callable
    apply: Callable
    finish: Callable


def make_step_parts(
    spec: ModelSpec,
    cfg: TrainConfig,
    optimizer: optax.GradientTransformation,
    axis: str | None = None,
    shard_embeddings: bool = False,
) -> StepParts:
    """The parts of `make_step_fn`'s step; `axis` names the data-parallel mesh axis."""
    grad_fn = make_grad_fn(spec, cfg, axis, shard_embeddings)

    def gradients(state: TrainState, batch: dict, gates=None):
        step_key = rng_streams.stream(state.rng, "step", state.step)
        rng = rng_streams.stream(step_key, "device", device_index(axis))
        if gates is None:
            gates = step_edge_mask(spec, cfg, step_key)
        aux, grads, scratch = grad_fn(
            state.params, batch, rng, state.step, state.row_scratch, gates
        )
        if is_bilevel(cfg):
            # First-order bi-level (DARTS-1st): the arch partition takes its gradient from a
            # held-out batch at the current weights; the weights keep the training gradient.
            aux_v, grads_v, scratch = grad_fn(
                state.params, batch["valid"], rng, state.step, scratch, gates
            )
            grads = {**grads, "arch": grads_v["arch"]}
            aux["valid_loss"] = aux_v["loss"]
            aux["total"] = aux["total"] + aux_v["total"]  # either non-finite stops the run
        return aux, grads, scratch

    def apply(params: Params, opt_state, grads):
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return sparse_embedding.apply_updates(params, updates), opt_state

    def finish(state: TrainState, params: Params, opt_state, scratch, aux: dict):
        finite = jnp.isfinite(aux["total"])
        first_bad = jnp.where(
            (state.first_bad_step < 0) & ~finite, state.step, state.first_bad_step
        )
        aux = {**aux, "edge_probs": edge_probabilities(params, spec)}  # after this step's update
        return TrainState(state.step + 1, params, opt_state, state.rng, first_bad, scratch), aux

    return StepParts(gradients, apply, finish)


def make_step_fn(
    spec: ModelSpec,
    cfg: TrainConfig,
    optimizer: optax.GradientTransformation,
    axis: str | None = None,
    shard_embeddings: bool = False,
) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
    """The pure per-device step; `axis` names the data-parallel mesh axis (None: one device).

    step_fn(state, batch, gates=None): `gates` [E] fixes the edges the step trains; otherwise a
    masked supernet draws its step's mask (`step_edge_mask`) and a searched model uses its
    gates. A non-finite loss skips the update (`cond` around the update, not a select between
    whole states: that would copy every table). For runs side by side under `vmap`, use
    `make_lane_step`, which keeps the `cond` outside the vmap.
    """
    parts = make_step_parts(spec, cfg, optimizer, axis, shard_embeddings)

    def step_fn(state: TrainState, batch: dict, gates=None) -> tuple[TrainState, dict]:
        aux, grads, scratch = parts.gradients(state, batch, gates)
        params, opt_state = jax.lax.cond(
            jnp.isfinite(aux["total"]),
            lambda p, o: parts.apply(p, o, grads),
            lambda p, o: (p, o),
            state.params,
            state.opt_state,
        )
        return parts.finish(state, params, opt_state, scratch, aux)

    return step_fn


class _Rows(NamedTuple):
    """A `SparseRows` gradient as a pytree, so it can leave a `vmap` (SparseRows is a leaf)."""

    ids: jax.Array
    values: jax.Array


def _pack_rows(grads):
    to = lambda g: _Rows(g.ids, g.values) if isinstance(g, sparse_embedding.SparseRows) else g
    return jax.tree.map(to, grads)


def _unpack_rows(grads):
    back = lambda g: sparse_embedding.SparseRows(g.ids, g.values) if isinstance(g, _Rows) else g
    return jax.tree.map(back, grads, is_leaf=lambda x: isinstance(x, _Rows))


def make_lane_step(
    spec: ModelSpec,
    cfg: TrainConfig,
    optimizer: optax.GradientTransformation,
    batch_axis: int | None = 0,
    gates_axis: int | None = None,
) -> Callable:
    """(stacked state, batch, gates=None) -> (stacked state, stacked aux): runs side by side
    under `vmap` over the state's leading lane axis (`batch_axis` / `gates_axis`: the batch's
    and the gates' lane axis, None = shared by every lane).

    The guard sits on the update, outside the vmap: every lane's update is applied when every
    lane's loss is finite, none otherwise (the run then stops, naming the first bad lane). A
    per-lane `cond` under `vmap` becomes a select between whole old and new states, which
    copies every lane's table and moments each step."""
    parts = make_step_parts(spec, cfg, optimizer)

    def lane_gradients(state, batch, gates):
        aux, grads, scratch = parts.gradients(state, batch, gates)
        return aux, _pack_rows(grads), scratch

    gradients = jax.vmap(lane_gradients, in_axes=(0, batch_axis, gates_axis))
    apply = jax.vmap(lambda p, o, g: parts.apply(p, o, _unpack_rows(g)))

    def step(state: TrainState, batch: dict, gates=None):
        aux, grads, scratch = gradients(state, batch, gates)
        params, opt_state = jax.lax.cond(
            jnp.all(jnp.isfinite(aux["total"])),
            lambda p, o: apply(p, o, grads),
            lambda p, o: (p, o),
            state.params,
            state.opt_state,
        )
        return jax.vmap(parts.finish)(state, params, opt_state, scratch, aux)

    return step


def make_update_fn(spec: ModelSpec, cfg: TrainConfig, optimizer: optax.GradientTransformation):
    """The single-device step, jitted with the state donated."""
    return jax.jit(make_step_fn(spec, cfg, optimizer), donate_argnums=0)
