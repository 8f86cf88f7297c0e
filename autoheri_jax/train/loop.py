"""The host loop: `train()` feeds the jitted step (step.py) and reads like its parts.

    restore (or init) -> for each step: next batch, step, log, save -> stop on a signal

`InputFeed` owns the grain iterators (train, and validation batches for the bi-level search),
`CheckpointSaver` the resume and save policy (orbax, checkpoint.py), `StepLog` the log records
and the progress bar, `SignalStop` (signals.py) the SIGTERM / SIGINT flag. The loop syncs
with the device only at log points: it then reads the metrics and `state.first_bad_step`, and raises
`NonFiniteLossError` naming the step if a loss was NaN or inf (that step's update was skipped,
so the state in hand is the last good one).
"""

from __future__ import annotations

import dataclasses
import signal
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import numpy as np

from autoheri_jax import phases
from autoheri_jax.config import (
    CheckpointConfig,
    ConfigError,
    ParallelConfig,
    TrainConfig,
    arch_of,
    is_bilevel,
)
from autoheri_jax.data.dataset import CTRDataset
from autoheri_jax.data.pipeline import StepBatchSource, train_iterator
from autoheri_jax.model.spec import ModelSpec
from autoheri_jax.progress import Progress
from autoheri_jax.train.checkpoint import Checkpointer
from autoheri_jax.train.early_stopping import EarlyStopper, check_setup, funnel_loss
from autoheri_jax.train.lanes import (
    NonFiniteLossError,
    StackedSource,
    arch_lanes,
    log_record,
    raise_if_a_lane_went_bad,
    seed_lanes,
    unstack_tree,
)
from autoheri_jax.train.multi_step import Dispatch
from autoheri_jax.train.parallel import make_data_parallel
from autoheri_jax.train.signals import SignalStop, TrainingInterrupted
from autoheri_jax.train.step import TrainState

_SYNC_EVERY = 4  # steps between host syncs on several CPU devices
VALID_SEED_OFFSET = 7919  # the bi-level validation stream's permutation seed: cfg.seed + this
# TrainConfig fields that change how a run executes, not what it computes: a checkpoint
# resumes under other values of them (and under their defaults, from before they existed)
EXECUTION_FIELDS = ("log_every", "steps_per_dispatch", "device_resident")


@dataclasses.dataclass(frozen=True)
class Resumable:
    """Where and how a training run checkpoints, and what each checkpoint records."""

    directory: Path
    cfg: CheckpointConfig
    extra: dict  # phase, model, architecture, config: JSON written with every checkpoint
    fingerprint: dict  # what must match for a checkpoint to be resumed (see fingerprint())


def fingerprint(spec: ModelSpec, cfg: TrainConfig | Sequence[TrainConfig],
                masks: np.ndarray | None = None) -> dict:  # fmt: skip
    """Everything that fixes the state's shapes and the run's trajectory (of every lane)."""

    def train_fields(c: TrainConfig) -> dict:
        # max_steps 0 (off) is left out, so checkpoints made before the field existed resume;
        # so are the early-stop fields when it is off (on, log_every is its check interval)
        fields, es = dataclasses.asdict(c), c.early_stop_patience > 0
        return {k: v for k, v in fields.items()
                if (k not in EXECUTION_FIELDS or (k == "log_every" and es))
                and not (k == "max_steps" and v == 0)
                and (es or not k.startswith("early_stop_"))}  # fmt: skip

    lanes = not isinstance(cfg, TrainConfig)
    train_cfg = [train_fields(c) for c in cfg] if lanes else train_fields(cfg)
    out = {"model": dataclasses.asdict(spec), "train": train_cfg}
    if masks is not None:
        out["masks"] = np.asarray(masks, np.float32).tolist()
    return out


class InputFeed:
    """The training batches (and, for the bi-level search, validation batches) of one run,
    cut per process from the seeded global permutation (data/pipeline.py)."""

    def __init__(self, cfg: TrainConfig, data: CTRDataset, valid: CTRDataset | None,
                 lanes: Sequence[tuple[TrainConfig, CTRDataset]] = ()):  # fmt: skip
        shard = {"process_index": jax.process_index(), "process_count": jax.process_count()}
        if lanes:  # one source per lane (its seed, its data), stacked per step
            self.source = StackedSource(
                [
                    StepBatchSource(d, c.batch_size, c.seed, c.epochs, max_steps=c.max_steps)
                    for c, d in lanes
                ]
            )
        else:
            self.source = StepBatchSource(
                data, cfg.batch_size, cfg.seed, cfg.epochs, **shard, max_steps=cfg.max_steps
            )
        self.train = train_iterator(self.source)
        self.valid = None
        if is_bilevel(cfg):
            valid_epochs = -(-len(self.source) // (valid.num_rows // cfg.batch_size))
            valid_source = StepBatchSource(
                valid, cfg.batch_size, cfg.seed + VALID_SEED_OFFSET, valid_epochs, **shard
            )
            self.valid = train_iterator(valid_source, num_threads=1, prefetch=2)

    @property
    def total_steps(self) -> int:
        return len(self.source)

    def epoch_of(self, step: int) -> int:
        return (step - 1) // self.source.steps_per_epoch

    def next(self) -> dict:
        batch = next(self.train)
        if self.valid is not None:
            batch["valid"] = next(self.valid)
        return batch

    def get_state(self) -> dict:
        valid = None if self.valid is None else self.valid.get_state()
        return {"train": self.train.get_state(), "valid": valid}

    def set_state(self, state: dict) -> None:
        self.train.set_state(state["train"])
        if self.valid is not None:
            self.valid.set_state(state["valid"])


class CheckpointSaver:
    """When to save, what each checkpoint holds (state, iterator positions, the validation
    loss that ranks checkpoints) and how a run resumes from the latest one."""

    def __init__(self, r: Resumable, spec: ModelSpec, cfg: TrainConfig, valid: CTRDataset | None,
                 stopper: EarlyStopper | None = None):  # fmt: skip
        c = r.cfg
        self.resumable, self.spec, self.batch_size = r, spec, cfg.batch_size
        self.stopper = stopper  # its state is saved beside the TrainState: {"train", "early_stop"}
        self.ckpt = Checkpointer(r.directory, keep=c.keep, keep_best=c.keep_best,
                                 async_save=c.async_save, fingerprint=r.fingerprint)  # fmt: skip
        # taken once, so every save is scored on the same rows (None: nothing scores)
        self.scoring = _scoring_rows(valid, c.valid_rows) if c.keep_best else None

    def restore(self, dp, feed: InputFeed) -> tuple[TrainState, int] | None:
        """(state, step) of the latest readable checkpoint, the feed positioned after it; or
        None. An unreadable (corrupted) latest step is set aside with a warning and the one
        before it restored (checkpoint.py `restore_latest`); a mismatching one is refused."""
        if not self.resumable.cfg.resume or self.ckpt.latest_step() is None:
            return None
        target = dp.abstract_state()
        if self.stopper is not None:
            target = {"train": target, "early_stop": self.stopper.abstract(target.params)}
        latest = self.ckpt.restore_latest(target)
        if latest is None:
            return None
        restored, _, data_state = latest
        if self.stopper is not None:
            self.stopper.restored(restored["early_stop"])
            restored = restored["train"]
        feed.set_state(data_state)
        state = dp.from_checkpoint(restored)
        # lanes hold one step per lane, all equal
        return state, int(np.asarray(jax.device_get(restored.step)).reshape(-1)[0])

    def due(self, step: int, total: int) -> bool:
        return step % self.resumable.cfg.every_steps == 0 or step == total

    def probe(self, canonical: TrainState) -> dict:
        """{"valid_nll": x} on the checkpoint-scoring rows (empty when nothing scores): the
        validation curve of a log record, beside the single-batch training loss."""
        metrics = _valid_loss(self.spec, canonical.params, self.scoring, self.batch_size)
        return {} if metrics is None else {"valid_nll": metrics["valid_loss"]}

    def save(self, step: int, canonical: TrainState, feed: InputFeed, force: bool) -> None:
        metrics = None
        if self.resumable.cfg.keep_best:
            metrics = _valid_loss(self.spec, canonical.params, self.scoring, self.batch_size)
        tree = canonical
        if self.stopper is not None:
            tree = {"train": canonical, "early_stop": self.stopper.saved()}
        self.ckpt.save(step, tree, extra=self.resumable.extra, data_state=feed.get_state(),
                       metrics=metrics, force=force)  # fmt: skip

    def close(self) -> None:
        self.ckpt.close()


class StepLog:
    """Host-side records every `log_every` steps (and at the end), and the progress bar."""

    def __init__(self, cfg: TrainConfig, desc: str, total: int, start: int, on_log, progress,
                 lanes: int = 0, lane_kind: str = ""):  # fmt: skip
        self.cfg, self.start, self.total, self.on_log = cfg, start, total, on_log
        self.lanes = lanes  # > 0: aux is lane-leading and on_log one callback per lane
        self.lane_kind = lane_kind  # the stats key that counts the lanes
        self.bar = Progress(total, desc, enabled=progress)
        self.t_start = time.perf_counter()

    def due(self, step: int) -> bool:
        return step % self.cfg.log_every == 0 or step == self.total

    def write(self, step: int, epoch: int, aux: dict, extra: dict | None = None) -> None:
        seconds = time.perf_counter() - self.t_start
        rate = (step - self.start) * self.cfg.batch_size * max(self.lanes, 1) / seconds
        if self.lanes:
            for k, on_log in enumerate(self.on_log or [None] * self.lanes):
                if on_log is not None:
                    on_log(step, log_record(step, epoch, unstack_tree(aux, k), rate))
            self.bar.update(step - self.start, loss=float(np.mean(aux["loss"])))
            return
        record = {**log_record(step, epoch, aux, rate, is_bilevel(self.cfg)), **(extra or {})}
        if self.on_log is not None:
            self.on_log(step, record)
        self.bar.update(step - self.start, loss=record["loss"], entropy=record["entropy"])

    def stats(self, dp) -> dict:
        seconds = time.perf_counter() - self.t_start
        done = (self.total - self.start) * max(self.lanes, 1)
        return {"steps": self.total, "resumed_at": self.start, "seconds": seconds,
                "examples_per_s": done * self.cfg.batch_size / seconds if done else 0.0,
                "launcher": dp.launcher, "devices": dp.num_devices,
                **({self.lane_kind: self.lanes} if self.lanes else {})}  # fmt: skip


def _check_sizes(cfg: TrainConfig, data: CTRDataset, valid: CTRDataset | None, desc: str):
    if is_bilevel(cfg) and (valid is None or valid.num_rows < cfg.batch_size):
        rows = 0 if valid is None else valid.num_rows
        raise ConfigError(
            f"{desc}: bilevel needs >= batch_size ({cfg.batch_size}) validation rows, got {rows}"
        )
    if data.num_rows < cfg.batch_size:
        raise ConfigError(
            f"{desc}: batch_size {cfg.batch_size} exceeds the {data.num_rows} training rows"
        )


MIN_ARCH_SHARE = 0.25  # least share of a gradient search's steps in which its edge logits move


def check_schedule(spec: ModelSpec, cfg: TrainConfig, total: int, desc: str) -> None:
    """Refuses a gradient search whose warm-up swallows it: with arch_warmup_steps near the
    step count (a larger batch, a smaller file) the gates barely move from 0.5 and the kept
    set is decided by noise. Checked against the run's real step count, before any compute."""
    arch = arch_of(cfg)
    if not spec.has_arch or arch is None:
        return
    moving = total - arch.arch_warmup_steps
    if moving < max(1, MIN_ARCH_SHARE * total):
        raise ConfigError(
            f"{desc}: edge_search.arch_warmup_steps={arch.arch_warmup_steps} leaves the edge "
            f"logits {max(moving, 0)} of the search's {total} steps (batch_size {cfg.batch_size}, "
            f"{cfg.epochs} epoch(s)); at least {MIN_ARCH_SHARE:.0%} must move them: set "
            f"edge_search.arch_warmup_steps <= {int((1 - MIN_ARCH_SHARE) * total)} (about 40% "
            f"is {int(0.4 * total)}) and edge_search.entropy_warmup_steps to about "
            f"{int(0.6 * total)}, or use edge_search.method=masked"
        )


def _raise_if_non_finite(dp, state: TrainState, desc: str, epoch: int) -> None:
    bad = dp.host_value(state.first_bad_step)
    if np.ndim(bad) > 0:  # lanes: name the first lane that went bad
        raise_if_a_lane_went_bad(bad, dp.lane_names, desc)
        return
    bad = int(bad)
    if bad >= 0:
        raise NonFiniteLossError(
            f"{desc}: non-finite loss at step {bad} (epoch {epoch}); that step's update "
            "was dropped, the run stopped, and the last checkpoint before it is intact"
        )


@phases.timed("train")
def train(
    spec: ModelSpec,
    cfg: TrainConfig | Sequence[TrainConfig],
    data: CTRDataset | Sequence[CTRDataset],
    *,
    desc: str,
    on_log: Callable[[int, dict], None] | Sequence[Callable | None] | None = None,
    progress: bool = True,
    valid: CTRDataset | None = None,
    parallel: ParallelConfig | None = None,
    resumable: Resumable | None = None,
    on_resume: Callable[[int], None] | None = None,
    masks: np.ndarray | None = None,
) -> tuple[TrainState, dict]:
    """Trains for cfg.epochs (resuming from `resumable`'s checkpoints when there are any).

    `on_log(step, record)` receives host-side metrics every cfg.log_every steps and at the end;
    `on_resume(step)` is called once when a checkpoint was restored. `valid` feeds the arch
    gradient when cfg.bilevel and scores checkpoints. `parallel` picks devices and launcher;
    the returned state is in the canonical layout whatever the launcher.

    K vmapped seeds: `cfg` and `data` are sequences of K (configs equal but for the seed) and
    `on_log` one callback (or None) per seed; the state comes back seed-leading, checkpoints
    hold all K (lanes.SeedLanes), and nothing scores them (no `valid`).

    A vmapped architecture batch: one `cfg`, one `data` and `masks` [A, E] of an unsearched
    spec; every lane starts from the same state and sees the same batches (lanes.ArchLanes);
    the state comes back architecture-leading and checkpoints hold all A.
    """
    lanes = not isinstance(cfg, TrainConfig)
    patience = (next(iter(cfg)) if lanes else cfg).early_stop_patience
    if (lanes or masks is not None) and (
        (valid is not None and not patience) or (parallel is not None and parallel.num_devices > 1)
    ):
        raise ConfigError(f"{desc}: a vmapped lane batch trains on one device, without `valid` "
                          "(which only early stopping scores)")  # fmt: skip
    if lanes and masks is not None:
        raise ConfigError(f"{desc}: vmapped seeds or an architecture batch, not both")
    if lanes:
        cfgs, datas = list(cfg), list(data)
        if len(cfgs) != len(datas) or not cfgs:
            raise ValueError(f"{len(cfgs)} configs for {len(datas)} datasets")
        cfg = cfgs[0]
        for d in datas:
            _check_sizes(cfg, d, None, desc)
        dp = seed_lanes(spec, cfgs)
        feed = InputFeed(cfg, None, None, lanes=list(zip(cfgs, datas, strict=True)))
        lane_count, lane_kind = len(cfgs), "vmapped_seeds"
    elif masks is not None:
        _check_sizes(cfg, data, None, desc)
        dp = arch_lanes(spec, cfg, masks)
        feed = InputFeed(cfg, data, None)
        lane_count, lane_kind = len(dp.masks), "architectures"
    else:
        _check_sizes(cfg, data, valid, desc)
        dp = make_data_parallel(spec, cfg, parallel or ParallelConfig())
        feed = InputFeed(cfg, data, valid)
        lane_count, lane_kind = 0, ""
    total = feed.total_steps
    check_schedule(spec, cfg, total, desc)
    stopper = None
    if patience:
        check_setup(cfg, valid, desc)
        stopper = EarlyStopper(spec, cfg, valid, lane_count, getattr(dp, "masks", None))
    dispatch = Dispatch(dp, spec, cfg, feed, data, desc, resumable and resumable.cfg.every_steps)
    saver_valid = None if lane_count or masks is not None else valid
    saver = None if resumable is None else CheckpointSaver(resumable, spec, cfg, saver_valid,
                                                           stopper)  # fmt: skip
    resumed = None if saver is None else saver.restore(dp, feed)
    if resumed is None:
        state, start = dp.init_state(spec, cfg), 0
        if stopper is not None:
            stopper.start(dp.canonical(state).params)
    else:
        state, start = resumed
        if on_resume is not None:
            on_resume(start)

    def save(step: int, force: bool) -> None:
        _raise_if_non_finite(dp, state, desc, feed.epoch_of(step))
        saver.save(step, dp.canonical(state), feed, force)

    # Simulated CPU devices can deadlock in all-reduce with many steps in flight (accelerators
    # keep their steps overlapping), so the host syncs every few steps there.
    sync_every = _SYNC_EVERY if dp.num_devices > 1 and dp.devices[0].platform == "cpu" else 0
    log = StepLog(cfg, desc, total, start, on_log, progress, lane_count, lane_kind)
    if stopper is not None:  # one host batch a step (TrainConfig refuses K > 1 with it)
        dispatch.plain_step = stopper.step(dp.step)
    try:
        with SignalStop(enabled=saver is not None) as stop:
            for step in dispatch.ends(start, total):  # K = steps_per_dispatch steps each
                if stopper is not None and stopper.done:  # resumed after the stop
                    break
                state, aux = dispatch.run(state, step)
                if sync_every and step % sync_every == 0:
                    jax.block_until_ready(state.step)
                if log.due(step):
                    aux = dp.host_value(aux)
                    _raise_if_non_finite(dp, state, desc, feed.epoch_of(step))
                    extra = None if saver is None else saver.probe(dp.canonical(state))
                    if stopper is not None:
                        extra = {**(extra or {}), **stopper.check(step, dp.canonical(state).params)}
                    log.write(step, feed.epoch_of(step), aux, extra)
                if saver is None:
                    continue
                if stop.signum is not None:
                    save(step, force=True)
                    saver.ckpt.wait()
                    name = signal.Signals(stop.signum).name
                    raise TrainingInterrupted(
                        f"{desc}: {name} at step {step}; checkpoint saved in "
                        f"{resumable.directory}; run the same command again to resume",
                        stop.signum,
                    )
                stopping = stopper is not None and stopper.done
                if saver.due(step, total) or stopping:
                    save(step, force=step == total or stopping)
            jax.block_until_ready(state)
            _raise_if_non_finite(dp, state, desc, feed.epoch_of(max(total, 1)))
    finally:
        if saver is not None:
            saver.close()
    if stopper is None:
        return dp.canonical(state), log.stats(dp)
    return stopper.finish(dp.canonical(state), log, dp, total)


def _scoring_rows(valid: CTRDataset | None, rows: int) -> CTRDataset | None:
    """The first `rows` validation rows that score checkpoints (None: nothing to score on)."""
    if valid is None or rows == 0 or valid.num_rows == 0 or jax.process_count() > 1:
        return None
    return valid.take(slice(0, min(rows, valid.num_rows)))


def _valid_loss(spec: ModelSpec, params, part: CTRDataset | None, batch_size: int) -> dict | None:
    """Entire-space NLL of `part` (see _scoring_rows), summed over the funnel's stages."""
    if part is None:
        return None
    return {"valid_loss": funnel_loss(spec, params, part, batch_size)}
