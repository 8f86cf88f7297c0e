"""Checkpoints of a `loop.train` run as a hook: where and when to save, what each checkpoint
holds, and how a run resumes from the latest one (the orbax side is checkpoint.py).

A checkpoint holds the state in the canonical layout (lane-leading for lanes), the data
iterators' positions, the early-stop state beside the TrainState when early stopping is on
({"train", "early_stop"}), and, with checkpoint.keep_best, the validation loss that ranks it.
A checkpoint is refused unless its `fingerprint` (the model's shapes, the fields that fix the
trajectory) matches the run's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import jax
import numpy as np

from autoheri_jax.config import CheckpointConfig, ConfigError, TrainConfig
from autoheri_jax.data.dataset import CTRDataset
from autoheri_jax.model.spec import ModelSpec
from autoheri_jax.train.checkpoint import Checkpointer
from autoheri_jax.train.early_stopping import funnel_loss
from autoheri_jax.train.hooks import Hook, Validate
from autoheri_jax.train.step import TrainState

if TYPE_CHECKING:
    from autoheri_jax.train.loop import Loop

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


def _train_fields(c: TrainConfig) -> dict:
    # max_steps 0 (off) is left out, so checkpoints made before the field existed resume;
    # so are the early-stop fields when it is off (on, log_every is its check interval)
    fields, es = dataclasses.asdict(c), c.early_stop_patience > 0
    return {
        k: v
        for k, v in fields.items()
        if (k not in EXECUTION_FIELDS or (k == "log_every" and es))
        and not (k == "max_steps" and v == 0)
        and (es or not k.startswith("early_stop_"))
    }


def fingerprint(spec: ModelSpec, cfg: TrainConfig, masks: np.ndarray | None = None) -> dict:
    """Everything that fixes the state's shapes and the run's trajectory: of one model, or of
    every architecture lane (`masks` [A, E])."""
    out = {"model": dataclasses.asdict(spec), "train": _train_fields(cfg)}
    if masks is not None:
        out["masks"] = np.asarray(masks, np.float32).tolist()
    return out


def seeds_fingerprint(spec: ModelSpec, cfgs: Sequence[TrainConfig]) -> dict:
    """`fingerprint` of seed lanes: one set of TrainConfig fields per seed."""
    return {"model": dataclasses.asdict(spec), "train": [_train_fields(c) for c in cfgs]}


def scoring_rows(valid: CTRDataset | None, cfg: CheckpointConfig) -> CTRDataset | None:
    """The first `cfg.valid_rows` validation rows that rank checkpoints under keep_best (and
    give the log its valid_nll); None: nothing scores. Taken once, so every save is scored
    on the same rows."""
    if not cfg.keep_best or valid is None or cfg.valid_rows == 0 or valid.num_rows == 0:
        return None
    if jax.process_count() > 1:
        return None
    return valid.take(slice(0, min(cfg.valid_rows, valid.num_rows)))


class Checkpoint(Hook):
    """Saves every checkpoint.every_steps steps, at the last step and where a hook stopped
    the run (those two forced past orbax's save interval); restores the latest readable
    checkpoint when checkpoint.resume. `early_stop`: the Validate hook whose early-stop state
    the checkpoints carry."""

    def __init__(
        self,
        resumable: Resumable,
        scoring: CTRDataset | None = None,
        early_stop: Validate | None = None,
    ):
        self.resumable, self.scoring, self.early_stop = resumable, scoring, early_stop
        self.every = resumable.cfg.every_steps
        self.ckpt: Checkpointer | None = None

    @property
    def directory(self) -> Path:
        return self.resumable.directory

    @property
    def _stopper(self):
        return None if self.early_stop is None else self.early_stop.stopper

    def setup(self, loop: Loop) -> None:
        """ConfigError unless checkpoint.every_steps is a multiple of steps_per_dispatch."""
        k = loop.cfg.steps_per_dispatch
        if self.every % k:
            raise ConfigError(
                f"{loop.desc}: checkpoint.every_steps={self.every} must be a multiple of "
                f"steps_per_dispatch={k}: checkpoints are written between dispatches"
            )

    def restore(self, loop: Loop) -> tuple[TrainState, int] | None:
        """(state, step) of the latest readable checkpoint, the feed positioned after it; or
        None. An unreadable (corrupted) latest step is set aside with a warning and the one
        before it restored (checkpoint.py `restore_latest`); a mismatching one is refused."""
        r, c = self.resumable, self.resumable.cfg
        self.ckpt = Checkpointer(
            r.directory,
            keep=c.keep,
            keep_best=c.keep_best,
            async_save=c.async_save,
            fingerprint=r.fingerprint,
        )
        if not c.resume or self.ckpt.latest_step() is None:
            return None
        target, stopper = loop.launcher.abstract_state(), self._stopper
        if stopper is not None:
            target = {"train": target, "early_stop": stopper.abstract(target.params)}
        latest = self.ckpt.restore_latest(target)
        if latest is None:
            return None
        restored, _, data_state = latest
        if stopper is not None:
            stopper.restored(restored["early_stop"])
            restored = restored["train"]
        loop.feed.set_state(data_state)
        state = loop.launcher.from_checkpoint(restored)
        # lanes hold one step per lane, all equal
        return state, int(np.asarray(jax.device_get(restored.step)).reshape(-1)[0])

    def __call__(self, loop: Loop) -> None:
        self.save(loop, force=loop.step == loop.total or loop.stop)

    def save(self, loop: Loop, force: bool) -> None:
        """A checkpoint of `loop`'s current step, after the non-finite check; `force` writes
        it even off orbax's save interval (the last step, a stop, a signal). Scored on
        `scoring` (valid_loss) when given; carries the early-stop state when there is one."""
        loop.check_finite()
        canonical = loop.canonical()
        metrics = None
        if self.scoring is not None:
            loss = funnel_loss(loop.spec, canonical.params, self.scoring, loop.cfg.batch_size)
            metrics = {"valid_loss": loss}
        tree, stopper = canonical, self._stopper
        if stopper is not None:
            tree = {"train": canonical, "early_stop": stopper.saved()}
        self.ckpt.save(
            loop.step,
            tree,
            extra=self.resumable.extra,
            data_state=loop.feed.get_state(),
            metrics=metrics,
            force=force,
        )

    def wait(self) -> None:
        """Blocks until background saves are written; CheckpointError if one failed."""
        self.ckpt.wait()

    def close(self) -> None:
        if self.ckpt is not None:
            self.ckpt.close()
