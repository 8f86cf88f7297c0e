"""The host loop: feeds the jitted step (step.py) from the grain pipeline, logs, predicts.

The loop syncs with the device only every `log_every` steps: it then reads the metrics and
`state.first_bad_step`, and raises `NonFiniteLossError` naming the step if a loss was NaN or
inf (that step's update was skipped, so the state in hand is the last good one).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from autoheri_jax.config import ConfigError, ParallelConfig, TrainConfig
from autoheri_jax.data.dataset import CTRDataset, eval_batch_indices
from autoheri_jax.data.pipeline import StepBatchSource, train_iterator
from autoheri_jax.losses import funnel_log_probs
from autoheri_jax.model.network import ModelSpec, Params, forward
from autoheri_jax.parallel import make_data_parallel
from autoheri_jax.progress import Progress
from autoheri_jax.step import (  # noqa: F401  (re-exported: the loop's public vocabulary)
    TrainState,
    abstract_state,
    count_params,
    init_state,
    make_update_fn,
)

_SYNC_EVERY = 4  # steps between host syncs on several devices


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or inf; the message names the phase and step."""


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
    parallel: ParallelConfig | None = None,
) -> tuple[TrainState, dict]:
    """Trains from fresh weights for cfg.epochs; returns the final state and timing stats.

    `on_log(step, record)` receives host-side metrics every cfg.log_every steps and at the end.
    `valid` feeds the arch gradient when cfg.bilevel. `parallel` picks devices and launcher;
    the returned state is in the canonical layout whatever the launcher.
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
    dp = make_data_parallel(spec, cfg, parallel or ParallelConfig())
    shard = {"process_index": jax.process_index(), "process_count": jax.process_count()}
    source = StepBatchSource(data, cfg.batch_size, cfg.seed, cfg.epochs, **shard)
    batches = train_iterator(source)
    total = len(source)
    valid_batches = None
    if cfg.bilevel:
        valid_epochs = -(-total // (valid.num_rows // cfg.batch_size))
        valid_source = StepBatchSource(
            valid, cfg.batch_size, cfg.seed + 7919, valid_epochs, **shard
        )
        valid_batches = train_iterator(valid_source, num_threads=1, prefetch=2)
    state = dp.init_state(spec, cfg)
    bar = Progress(total, desc, enabled=progress)
    t_start = time.perf_counter()
    for step in range(1, total + 1):
        batch = next(batches)
        if valid_batches is not None:
            batch["valid"] = next(valid_batches)
        state, aux = dp.step(state, dp.place_batch(batch))
        if dp.num_devices > 1 and step % _SYNC_EVERY == 0:
            # Simulated CPU devices can deadlock in all-reduce when many steps are in flight.
            jax.block_until_ready(state.step)
        if step % cfg.log_every == 0 or step == total:
            aux = dp.host_value(aux)
            bad = int(dp.host_value(state.first_bad_step))
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
    stats = {"steps": total, "seconds": seconds, "examples_per_s": total * cfg.batch_size / seconds}
    stats |= {"launcher": dp.launcher, "devices": dp.num_devices}
    return dp.canonical(state), stats
