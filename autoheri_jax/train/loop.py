"""The host loop: `train(launcher, hooks)` feeds the launcher's jitted step and calls hooks.

    restore (or init) -> for each dispatch end: run the steps; call the hooks that are due
                      -> close the hooks -> let them finish the result

The launcher (launchers.py Single / Mesh, pmap_launcher.py Pmap, lanes.py SeedLanes /
ArchLanes) owns the state's layout, its step, its batch source, its log records and its
non-finite check; the loop never asks which one it has. Everything else a run does between
dispatches is a `Hook` (hooks.py: the protocol, the non-finite check, validation and early
stopping, the log, signals; checkpoint_hook.py: checkpoints and resume), called every `every`
steps, at the last step and at the step where a hook stopped the run, in the order given:
order is meaning (a log record before the checkpoint of its step; a signal's checkpoint
instead of the scheduled one). fit.py builds the launcher and the usual hooks for one model,
seed lanes and architecture lanes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Sequence
from typing import Any

import jax

from autoheri_jax import phases
from autoheri_jax.config import TrainConfig
from autoheri_jax.data.dataset import CTRDataset
from autoheri_jax.model.spec import ModelSpec
from autoheri_jax.train.checkpoint_hook import Resumable, fingerprint
from autoheri_jax.train.feed import InputFeed, check_schedule
from autoheri_jax.train.hooks import Hook
from autoheri_jax.train.launchers import Launcher, NonFiniteLossError
from autoheri_jax.train.multi_step import Dispatch
from autoheri_jax.train.step import TrainState

# the names callers import from here
__all__ = ["Hook", "Loop", "NonFiniteLossError", "Resumable", "fingerprint", "train"]


@dataclasses.dataclass
class Loop:
    """What hooks see of a run: its parts, and where it stands after the last dispatch."""

    launcher: Launcher
    spec: ModelSpec
    cfg: TrainConfig
    feed: InputFeed
    desc: str
    total: int  # the run's last step
    dispatch: Dispatch | None = None  # built after every hook's setup
    state: Any = None  # TrainState in the launcher's layout
    start: int = 0  # the step the run starts after (> 0: restored from a checkpoint)
    resumed: bool = False
    step: int = 0  # the last step run
    aux: Any = None  # the last step's metrics, on device
    record: dict = dataclasses.field(default_factory=dict)  # hooks' fields for this step's log
    stop: bool = False  # set by a hook: no dispatch after this one
    result: tuple[TrainState, dict] | None = None  # (canonical state, stats), once finished
    t_start: float = 0.0
    _host_aux: Any = None

    @property
    def epoch(self) -> int:
        return self.feed.epoch_of(self.step)

    def canonical(self) -> TrainState:
        """The current state in the canonical layout (no device or sharding axis)."""
        return self.launcher.canonical(self.state)

    def host_aux(self) -> dict:
        """The last step's metrics on the host (a device sync, once per step)."""
        if self._host_aux is None:
            self._host_aux = self.launcher.host_value(self.aux)
        return self._host_aux

    def check_finite(self) -> None:
        """NonFiniteLossError (naming the lane, if any) when a step's loss was NaN or inf."""
        self.launcher.raise_if_non_finite(self.state, self.desc, self.epoch)

    def examples_per_s(self) -> float:
        """Training rows per second since this run started (or resumed), all lanes counted."""
        seconds = time.perf_counter() - self.t_start
        return (
            (self.step - self.start) * self.cfg.batch_size * max(self.launcher.lanes, 1) / seconds
        )

    def stats(self) -> dict:
        """The run's summary: steps, resumed_at, seconds, examples_per_s, launcher, devices
        and, for lanes, their count under the launcher's lane_kind."""
        seconds = time.perf_counter() - self.t_start
        done = (self.step - self.start) * max(self.launcher.lanes, 1)
        dp = self.launcher
        return {
            "steps": self.step,
            "resumed_at": self.start,
            "seconds": seconds,
            "examples_per_s": done * self.cfg.batch_size / seconds if done else 0.0,
            "launcher": dp.launcher,
            "devices": dp.num_devices,
            **({dp.lane_kind: dp.lanes} if dp.lanes else {}),
        }


@phases.timed("train")
def train(
    launcher: Launcher,
    hooks: Sequence[Hook] = (),
    *,
    spec: ModelSpec,
    cfg: TrainConfig,
    data: CTRDataset | None,
    desc: str,
    valid: CTRDataset | None = None,
) -> tuple[TrainState, dict]:
    """Trains `spec` for cfg.epochs (or cfg.max_steps) steps on `launcher`'s step.

    `data` is what `launcher.batch_source` cuts batches from (seed lanes hold their own and
    take None); `valid` feeds the arch gradient of a bi-level search (edge_search.bilevel).
    -> (the state in the canonical layout, lane-leading for lanes; stats {"steps",
    "resumed_at", "seconds", "examples_per_s", "launcher", "devices", and the lane count for
    lanes}), both as the hooks' `finish` left them. Raises NonFiniteLossError naming the step
    (and lane) if a loss went NaN or inf, checked at the end and wherever a hook asks."""
    hooks = list(hooks)
    feed = InputFeed(launcher.batch_source(cfg, data), cfg, valid)
    loop = Loop(launcher, spec, cfg, feed, desc, total=feed.total_steps)
    check_schedule(spec, cfg, loop.total, desc)
    for hook in hooks:
        hook.setup(loop)
    loop.dispatch = Dispatch(launcher, spec, cfg, feed, data, desc)
    with contextlib.ExitStack() as closing:
        for hook in reversed(hooks):  # callbacks run last-in first-out: closed in list order
            closing.callback(hook.close)
        resumed = next((r for h in hooks if (r := h.restore(loop)) is not None), None)
        if resumed is None:
            loop.state = launcher.init_state(spec, cfg)
        else:
            (loop.state, loop.start), loop.resumed = resumed, True
        loop.step, loop.t_start = loop.start, time.perf_counter()
        for hook in hooks:
            hook.start(loop)
        _run(loop, hooks)
    loop.result = (launcher.canonical(loop.state), loop.stats())
    for hook in hooks:
        hook.finish(loop)
    return loop.result


def _run(loop: Loop, hooks: Sequence[Hook]) -> None:
    sync_every = loop.launcher.sync_every
    for step in loop.dispatch.ends(loop.start, loop.total):  # K = steps_per_dispatch each
        if loop.stop:
            break
        loop.state, loop.aux = loop.dispatch.run(loop.state, step)
        loop.step, loop.record, loop._host_aux = step, {}, None
        if sync_every and step % sync_every == 0:
            jax.block_until_ready(loop.state.step)
        for hook in hooks:
            if hook.due(loop):
                hook(loop)
    jax.block_until_ready(loop.state)
    epoch = loop.feed.epoch_of(max(loop.total, 1))
    loop.launcher.raise_if_non_finite(loop.state, loop.desc, epoch)
