"""The jitted joint update and the host loop that feeds it.

`make_update_fn` returns a pure `update_fn(state, batch) -> (state, aux)`, jitted with the
state donated. One call updates both optax partitions (weights and arch) from one gradient.
Per-step randomness (dropout) is `fold_in(state.rng, state.step)`, so a run is a function of
its seed and the batch order alone.

A non-finite loss does not corrupt the state: that step's update is dropped and the step is
recorded in `state.first_bad_step`; the loop checks it at every log point and raises
`NonFiniteLossError` naming the step, with the last good parameters still in hand.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from autoheri_jax import sparse_rows
from autoheri_jax.config import ConfigError, TrainConfig
from autoheri_jax.data.dataset import CTRDataset, eval_batch_indices
from autoheri_jax.data.pipeline import StepBatchSource, train_iterator
from autoheri_jax.losses import edge_entropy, entire_space_bce, entropy_weight_at, funnel_log_probs
from autoheri_jax.model.network import (
    ModelSpec,
    Params,
    edge_probabilities,
    embed_from,
    forward,
    init_params,
)
from autoheri_jax.optim import make_optimizer
from autoheri_jax.progress import Progress


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or inf; the message names the phase and step."""


class TrainState(NamedTuple):
    step: jax.Array  # int32 scalar: updates applied so far
    params: Params
    opt_state: optax.OptState
    rng: jax.Array  # base key; step keys are fold_in(rng, step)
    first_bad_step: jax.Array  # int32 scalar: first step with a non-finite loss, -1 if none


def init_state(spec: ModelSpec, cfg: TrainConfig, optimizer: optax.GradientTransformation):
    k_init, k_train = jax.random.split(jax.random.PRNGKey(cfg.seed))
    params = init_params(k_init, spec)
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=optimizer.init(params),
        rng=k_train,
        first_bad_step=jnp.full((), -1, jnp.int32),
    )


def abstract_state(spec: ModelSpec, cfg: TrainConfig) -> TrainState:
    """Shapes and dtypes of the state, without allocating it."""
    return jax.eval_shape(lambda: init_state(spec, cfg, make_optimizer(cfg)))


def count_params(tree: Any) -> dict[str, int]:
    """Parameter count per top-level group (works on abstract shapes too)."""
    return {k: int(sum(np.prod(x.shape) for x in jax.tree.leaves(v))) for k, v in tree.items()}


def make_loss_fn(spec: ModelSpec, cfg: TrainConfig) -> Callable:
    """loss_fn(params, batch, rng, step, embedded=None) -> (total, aux)."""

    def loss_fn(params: Params, batch: dict, rng: jax.Array, step: jax.Array, embedded=None):
        dropout_rng = rng if spec.dropout > 0 else None
        logits = forward(params, spec, batch, dropout_rng=dropout_rng, embedded=embedded)
        stage_bce = entire_space_bce(logits, batch["labels"])
        task_loss = jnp.sum(stage_bce)
        entropy = edge_entropy(params["arch"]["edge_logits"] if spec.has_arch else None)
        weight = entropy_weight_at(step, cfg.entropy_weight, cfg.entropy_warmup_steps)
        total = task_loss + weight * entropy
        return total, {
            "loss": task_loss,
            "stage_bce": stage_bce,
            "entropy": entropy,
            "total": total,
        }

    return loss_fn


def make_grad_fn(spec: ModelSpec, cfg: TrainConfig) -> Callable:
    """grad_fn(params, batch, rng, step) -> (aux, grads), grads shaped like params.

    With sparse embeddings the table's gradient is `SparseRows` over the batch's unique rows:
    the loss is differentiated with respect to those rows only, never the whole table.
    """
    loss_fn = make_loss_fn(spec, cfg)
    dense_grad = jax.value_and_grad(loss_fn, has_aux=True)

    def grad_fn(params: Params, batch: dict, rng: jax.Array, step: jax.Array):
        if not cfg.sparse_embeddings:
            (_, aux), grads = dense_grad(params, batch, rng, step)
            return aux, grads
        rows, single, bags, _ = sparse_rows.unique_lookup_rows(spec, batch)
        table_rows = sparse_rows.gather_rows(params["embedding"]["table"], rows)
        others = {k: v for k, v in params.items() if k != "embedding"}

        def on_rows(others, table_rows):
            embedded = embed_from(table_rows, spec, batch, single, bags)
            return loss_fn(others, batch, rng, step, embedded=embedded)

        (_, aux), (g_others, g_rows) = jax.value_and_grad(on_rows, argnums=(0, 1), has_aux=True)(
            others, table_rows
        )
        return aux, {**g_others, "embedding": {"table": sparse_rows.SparseRows(rows, g_rows)}}

    return grad_fn


def make_update_fn(spec: ModelSpec, cfg: TrainConfig, optimizer: optax.GradientTransformation):
    grad_fn = make_grad_fn(spec, cfg)

    def update_fn(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        rng = jax.random.fold_in(state.rng, state.step)
        aux, grads = grad_fn(state.params, batch, rng, state.step)
        if cfg.bilevel:
            # First-order bi-level (DARTS-1st): the arch partition takes its gradient from a
            # held-out batch at the current weights; the weights keep the training gradient.
            aux_v, grads_v = grad_fn(state.params, batch["valid"], rng, state.step)
            grads = {**grads, "arch": grads_v["arch"]}
            aux["valid_loss"] = aux_v["loss"]
            aux["total"] = aux["total"] + aux_v["total"]  # either non-finite stops the run
        finite = jnp.isfinite(aux["total"])

        def apply(params, opt_state):
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return sparse_rows.apply_updates(params, updates), opt_state

        # A non-finite step keeps the last good state instead of spreading NaN everywhere.
        # `cond` rather than `where`: selecting between whole tables would cost O(vocabulary).
        params, opt_state = jax.lax.cond(
            finite, apply, lambda p, o: (p, o), state.params, state.opt_state
        )
        first_bad = jnp.where(
            (state.first_bad_step < 0) & ~finite, state.step, state.first_bad_step
        )
        new_state = TrainState(state.step + 1, params, opt_state, state.rng, first_bad)
        aux["edge_probs"] = edge_probabilities(params, spec)  # after this step's update
        return new_state, aux

    return jax.jit(update_fn, donate_argnums=0)


def make_predict_fn(spec: ModelSpec):
    """Jitted (params, batch) -> (conditional probs, entire-space probs), each B x T."""

    def predict(params: Params, batch: dict):
        logits = forward(params, spec, batch)
        return jax.nn.sigmoid(logits), jnp.exp(funnel_log_probs(logits)[0])

    return jax.jit(predict)


def predict_dataset(
    spec: ModelSpec, params: Params, data: CTRDataset, batch_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Exact full pass: [N, T] conditional and entire-space probabilities for every row."""
    predict = make_predict_fn(spec)
    cond, entire = [], []
    for idx, valid in eval_batch_indices(data.num_rows, min(batch_size, data.num_rows)):
        batch = data.batch(idx)
        batch.pop("labels")
        c, e = jax.device_get(predict(params, batch))
        cond.append(c[:valid])
        entire.append(e[:valid])
    return np.concatenate(cond), np.concatenate(entire)


def train(
    spec: ModelSpec,
    cfg: TrainConfig,
    data: CTRDataset,
    *,
    desc: str,
    on_log: Callable[[int, dict], None] | None = None,
    progress: bool = True,
    valid: CTRDataset | None = None,
) -> tuple[TrainState, dict]:
    """Trains from fresh weights for cfg.epochs; returns the final state and timing stats.

    `on_log(step, record)` receives host-side metrics every cfg.log_every steps and at the end.
    `valid` feeds the arch gradient when cfg.bilevel (its batches cycle through epochs).
    """
    if cfg.bilevel and (valid is None or valid.num_rows < cfg.batch_size):
        rows = 0 if valid is None else valid.num_rows
        raise ConfigError(
            f"{desc}: bilevel needs >= batch_size ({cfg.batch_size}) validation rows, got {rows}"
        )
    if data.num_rows < cfg.batch_size:
        raise ConfigError(
            f"{desc}: batch_size {cfg.batch_size} exceeds the {data.num_rows} training rows"
        )
    source = StepBatchSource(data, cfg.batch_size, cfg.seed, cfg.epochs)
    batches = train_iterator(source)
    total = len(source)
    valid_batches = None
    if cfg.bilevel:
        valid_epochs = -(-total // (valid.num_rows // cfg.batch_size))
        valid_source = StepBatchSource(valid, cfg.batch_size, cfg.seed + 7919, valid_epochs)
        valid_batches = train_iterator(valid_source, num_threads=1, prefetch=2)
    optimizer = make_optimizer(cfg)
    state = init_state(spec, cfg, optimizer)
    update_fn = make_update_fn(spec, cfg, optimizer)
    bar = Progress(total, desc, enabled=progress)
    t_start = time.perf_counter()
    for step in range(1, total + 1):
        batch = next(batches)
        if valid_batches is not None:
            batch["valid"] = next(valid_batches)
        state, aux = update_fn(state, batch)
        if step % cfg.log_every == 0 or step == total:
            aux = jax.device_get(aux)
            bad = int(state.first_bad_step)
            if bad >= 0:
                raise NonFiniteLossError(
                    f"{desc}: non-finite loss at step {bad} (epoch "
                    f"{bad // source.steps_per_epoch}); the update of that step was dropped "
                    "and the run stopped"
                )
            record = {
                "step": step,
                "epoch": (step - 1) // source.steps_per_epoch,
                "loss": float(aux["loss"]),
                "stage_bce": [float(x) for x in aux["stage_bce"]],
                "entropy": float(aux["entropy"]),
                **({"valid_loss": float(aux["valid_loss"])} if cfg.bilevel else {}),
                "edge_probs": [float(p) for p in aux["edge_probs"]],
                "examples_per_s": step * cfg.batch_size / (time.perf_counter() - t_start),
            }
            if on_log is not None:
                on_log(step, record)
            bar.update(step, loss=record["loss"], entropy=record["entropy"])
    jax.block_until_ready(state)
    seconds = time.perf_counter() - t_start
    return state, {
        "steps": step,
        "seconds": seconds,
        "examples_per_s": step * cfg.batch_size / seconds,
    }
