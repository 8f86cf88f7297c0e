"""The host loop: feeds the jitted step (step.py) from the grain pipeline, logs, predicts.

The loop syncs with the device only every `log_every` steps: it then reads the metrics and
`state.first_bad_step`, and raises `NonFiniteLossError` naming the step if a loss was NaN or
inf (that step's update was skipped, so the state in hand is the last good one).
"""

from __future__ import annotations

import dataclasses
import functools
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np

from autoheri_jax.checkpoint import Checkpointer
from autoheri_jax.config import CheckpointConfig, ConfigError, ParallelConfig, TrainConfig
from autoheri_jax.data.dataset import CTRDataset, eval_batch_indices
from autoheri_jax.data.pipeline import StepBatchSource, train_iterator
from autoheri_jax.losses import stage_probabilities
from autoheri_jax.model.network import ModelSpec, Params, forward_outputs
from autoheri_jax.parallel import make_data_parallel
from autoheri_jax.progress import Progress
from autoheri_jax.step import (  # noqa: F401  (re-exported: the loop's public vocabulary)
    TrainState,
    abstract_state,
    count_params,
    init_state,
    make_update_fn,
)

_SYNC_EVERY = 4  # steps between host syncs on several CPU devices


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or inf; the message names the phase and step."""


@functools.lru_cache(maxsize=32)  # one compilation per model, not one per evaluation
def make_predict_fn(spec: ModelSpec):
    """Jitted (params, batch) -> (conditional probs, entire-space probs), each B x T."""

    def predict(params: Params, batch: dict):
        logits, extras = forward_outputs(params, spec, batch)
        return stage_probabilities(logits, spec, extras)

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


@dataclasses.dataclass(frozen=True)
class Resumable:
    """Where and how a training run checkpoints, and what each checkpoint records."""

    directory: Path
    cfg: CheckpointConfig
    extra: dict  # phase, model, architecture, config: JSON written with every checkpoint
    fingerprint: dict  # what must match for a checkpoint to be resumed (see fingerprint())


class TrainingInterrupted(RuntimeError):
    """SIGTERM / SIGINT arrived; a checkpoint of the current step was saved first."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum


def fingerprint(spec: ModelSpec, cfg: TrainConfig) -> dict:
    """Everything that fixes the state's shapes and the run's trajectory."""
    train_cfg = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "log_every"}
    return {"model": dataclasses.asdict(spec), "train": train_cfg}


def _scoring_rows(valid: CTRDataset | None, rows: int) -> CTRDataset | None:
    """The first `rows` validation rows that score checkpoints (None: nothing to score on)."""
    if valid is None or rows == 0 or valid.num_rows == 0 or jax.process_count() > 1:
        return None
    return valid.take(slice(0, min(rows, valid.num_rows)))


def _valid_loss(spec: ModelSpec, params, part: CTRDataset | None) -> dict | None:
    """Mean entire-space NLL summed over stages on `part` (see _scoring_rows)."""
    if part is None:
        return None
    _, entire = predict_dataset(spec, params, part, 4096)
    p = np.clip(entire.astype(np.float64), 1e-7, 1 - 1e-7)
    y = np.asarray(part.labels, np.float64)
    return {"valid_loss": float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)) * y.shape[1])}


def _catch_signals(flag: dict):
    if threading.current_thread() is not threading.main_thread():
        return {}

    def handler(signum, _frame):
        flag["signum"] = signum

    return {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}


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
    resumable: Resumable | None = None,
    on_resume: Callable[[int], None] | None = None,
) -> tuple[TrainState, dict]:
    """Trains for cfg.epochs (resuming from `resumable`'s checkpoints when there are any).

    `on_log(step, record)` receives host-side metrics every cfg.log_every steps and at the end;
    `on_resume(step)` is called once when a checkpoint was restored. `valid` feeds the arch
    gradient when cfg.bilevel and scores checkpoints. `parallel` picks devices and launcher;
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

    ckpt = None
    if resumable is not None:
        c = resumable.cfg
        ckpt = Checkpointer(resumable.directory, keep=c.keep, keep_best=c.keep_best,
                            async_save=c.async_save, fingerprint=resumable.fingerprint)  # fmt: skip
    start = 0
    if ckpt is not None and resumable.cfg.resume and ckpt.latest_step() is not None:
        restored, _, data_state = ckpt.restore(None, dp.abstract_state())
        state = dp.to_device(restored) if dp.launcher == "pmap" else restored
        batches.set_state(data_state["train"])
        if valid_batches is not None:
            valid_batches.set_state(data_state["valid"])
        start = int(jax.device_get(restored.step))
        if on_resume is not None:
            on_resume(start)
    else:
        state = dp.init_state(spec, cfg)

    def check_finite(epoch: int) -> None:
        bad = int(dp.host_value(state.first_bad_step))
        if bad >= 0:
            raise NonFiniteLossError(
                f"{desc}: non-finite loss at step {bad} (epoch {epoch}); that step's update "
                "was dropped, the run stopped, and the last checkpoint before it is intact"
            )

    scoring = None  # taken once: every save scores the same rows
    if resumable is not None and resumable.cfg.keep_best:
        scoring = _scoring_rows(valid, resumable.cfg.valid_rows)

    def save(step: int, force: bool) -> None:
        check_finite((step - 1) // source.steps_per_epoch)
        canonical = dp.canonical(state)
        valid_state = None if valid_batches is None else valid_batches.get_state()
        iterators = {"train": batches.get_state(), "valid": valid_state}
        metrics = _valid_loss(spec, canonical.params, scoring) if resumable.cfg.keep_best else None
        ckpt.save(step, canonical, extra=resumable.extra, data_state=iterators, metrics=metrics,
                  force=force)  # fmt: skip

    on_cpu_devices = dp.num_devices > 1 and dp.devices[0].platform == "cpu"
    stop: dict = {}
    previous_handlers = _catch_signals(stop) if ckpt is not None else {}
    bar = Progress(total, desc, enabled=progress)
    t_start = time.perf_counter()
    try:
        for step in range(start + 1, total + 1):
            batch = next(batches)
            if valid_batches is not None:
                batch["valid"] = next(valid_batches)
            state, aux = dp.step(state, dp.place_batch(batch))
            if on_cpu_devices and step % _SYNC_EVERY == 0:
                # Simulated CPU devices can deadlock in all-reduce with many steps in flight
                # (accelerators keep their steps overlapping).
                jax.block_until_ready(state.step)
            epoch = (step - 1) // source.steps_per_epoch
            if step % cfg.log_every == 0 or step == total:
                aux = dp.host_value(aux)
                check_finite(epoch)
                record = {
                    "step": step,
                    "epoch": epoch,
                    "loss": float(aux["loss"]),
                    "stage_bce": [float(x) for x in aux["stage_bce"]],
                    "entropy": float(aux["entropy"]),
                    **({"valid_loss": float(aux["valid_loss"])} if cfg.bilevel else {}),
                    "edge_probs": [float(p) for p in aux["edge_probs"]],
                    "examples_per_s": (step - start)
                    * cfg.batch_size
                    / (time.perf_counter() - t_start),
                }
                if on_log is not None:
                    on_log(step, record)
                bar.update(step - start, loss=record["loss"], entropy=record["entropy"])
            if ckpt is not None:
                if stop:
                    save(step, force=True)
                    ckpt.wait()
                    name = signal.Signals(stop["signum"]).name
                    raise TrainingInterrupted(
                        f"{desc}: {name} at step {step}; checkpoint saved in "
                        f"{resumable.directory}; run the same command again to resume",
                        stop["signum"],
                    )
                if step % resumable.cfg.every_steps == 0 or step == total:
                    save(step, force=step == total)
        jax.block_until_ready(state)
        check_finite(max(total - 1, 0) // source.steps_per_epoch)
    finally:
        for s, h in previous_handlers.items():
            signal.signal(s, h)
        if ckpt is not None:
            ckpt.close()
    seconds = time.perf_counter() - t_start
    done = total - start
    stats = {"steps": total, "resumed_at": start, "seconds": seconds,
             "examples_per_s": done * cfg.batch_size / seconds if done else 0.0,
             "launcher": dp.launcher, "devices": dp.num_devices}  # fmt: skip
    return dp.canonical(state), stats
