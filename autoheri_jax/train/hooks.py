"""What `loop.train` calls between dispatches: the `Hook` protocol and the usual hooks.

  CheckFinite  every log_every steps: NonFiniteLossError naming the step if a loss went NaN
               or inf (the loop syncs with the device only at such points)
  Validate     every log_every steps: the validation NLL on the checkpoint-scoring rows, and
               early stopping (early_stopping.EarlyStopper; it stops the run)
  Log          every log_every steps: the log records (one per lane) and the progress bar
  Signals      every dispatch end: SIGTERM / SIGINT -> a checkpoint of this step, then
               TrainingInterrupted (signals.py)

The checkpoint hook is checkpoint_hook.py. A hook's `every` is counted from step 0, so a run
resumed from a checkpoint calls its hooks at the steps an uninterrupted run does.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from autoheri_jax.data.dataset import CTRDataset
from autoheri_jax.progress import Progress
from autoheri_jax.train.early_stopping import EarlyStopper, check_setup, funnel_loss
from autoheri_jax.train.signals import SignalStop, TrainingInterrupted
from autoheri_jax.train.step import TrainState

if TYPE_CHECKING:
    from autoheri_jax.train.checkpoint_hook import Checkpoint
    from autoheri_jax.train.loop import Loop


class Hook:
    """Something a run does between dispatches. `loop.train` calls, in the order of its list:

      setup(loop)     before the step is built or anything restored: refuse a bad setup
      restore(loop)   -> (state, step) to resume from, or None (the first answer wins)
      start(loop)     after restore-or-init, before the first dispatch
      __call__(loop)  at each dispatch end that is `due`
      close()         always, once the run ended or failed (in list order)
      finish(loop)    after a run that ended without an error: may replace `loop.result`

    A hook stops the run by setting `loop.stop` (the hooks after it in the list are then due
    at that step too), or by raising."""

    every: int = 0  # call every this many steps (0: only at the last step and at a stop)

    def due(self, loop: Loop) -> bool:
        """Whether to call the hook after this dispatch: at a multiple of `every`, the last
        step, or a stop."""
        periodic = self.every > 0 and loop.step % self.every == 0
        return periodic or loop.step == loop.total or loop.stop

    def setup(self, loop: Loop) -> None:
        pass

    def restore(self, loop: Loop) -> tuple[TrainState, int] | None:
        return None

    def start(self, loop: Loop) -> None:
        pass

    def __call__(self, loop: Loop) -> None:
        pass

    def close(self) -> None:
        pass

    def finish(self, loop: Loop) -> None:
        pass


class CheckFinite(Hook):
    """NonFiniteLossError (naming the step, and the lane for lanes) every `every` steps when
    a loss went NaN or inf."""

    def __init__(self, every: int):
        self.every = every

    def __call__(self, loop: Loop) -> None:
        loop.host_aux()
        loop.check_finite()


class Validate(Hook):
    """The validation loss at log points: `valid_nll` on `scoring` (the rows that rank
    checkpoints; None: not logged), and, with cfg.early_stop_patience > 0, the early-stop
    check on `valid` (seed lanes: one split per lane), which keeps the best weights, freezes
    lanes that stopped and stops the run once every lane has."""

    def __init__(
        self,
        every: int,
        scoring: CTRDataset | None = None,
        valid: CTRDataset | Sequence[CTRDataset] | None = None,
    ):
        self.every, self.scoring, self.valid = every, scoring, valid
        self.stopper: EarlyStopper | None = None

    def setup(self, loop: Loop) -> None:
        """Builds the EarlyStopper when early stopping is on; ConfigError without `valid`."""
        if loop.cfg.early_stop_patience:
            check_setup(loop.cfg, self.valid, loop.desc)
            dp = loop.launcher
            self.stopper = EarlyStopper(loop.spec, loop.cfg, self.valid, dp.lanes, dp.gates)

    def start(self, loop: Loop) -> None:
        """Starts (or, resumed, keeps) the early-stop state and wraps the loop's step so
        that stopped lanes stay frozen; a run resumed after its stop runs no step."""
        if self.stopper is None:
            return
        if not loop.resumed:
            self.stopper.start(loop.canonical().params)
        # one host batch a step (TrainConfig refuses steps_per_dispatch > 1 with it)
        loop.dispatch.plain_step = self.stopper.step(loop.dispatch.plain_step)
        loop.stop = self.stopper.done  # resumed after the stop: nothing left to run

    def __call__(self, loop: Loop) -> None:
        if self.scoring is None and self.stopper is None:
            return
        params = loop.canonical().params
        if self.scoring is not None:
            nll = funnel_loss(loop.spec, params, self.scoring, loop.cfg.batch_size)
            loop.record["valid_nll"] = nll
        if self.stopper is not None:
            loop.record.update(self.stopper.check(loop.step, params))
            loop.stop = loop.stop or self.stopper.done

    def finish(self, loop: Loop) -> None:
        """The best weights instead of the last, and the run's "early_stop" record."""
        if self.stopper is None:
            return
        state, stats = loop.result
        best = state._replace(params=self.stopper.state.best_params)
        loop.result = best, {**stats, "early_stop": self.stopper.record(loop.step)}


class Log(Hook):
    """Host-side log records every `every` steps (and at the end), and the progress bar.

    `on_log` holds one callback (or None) per model: per lane for lanes. A record is
    launchers.log_record's fields followed by what the hooks before this one added."""

    def __init__(
        self,
        every: int,
        on_log: Sequence[Callable[[int, dict], None] | None] = (),
        *,
        progress: bool = True,
        valid_loss: bool = False,
        on_resume: Callable[[int], None] | None = None,
    ):
        self.every, self.on_log, self.progress = every, list(on_log), progress
        self.valid_loss = valid_loss  # the bi-level search's validation batch loss
        self.on_resume = on_resume  # called once, with the step, when the run resumed
        self.bar: Progress | None = None

    def start(self, loop: Loop) -> None:
        if loop.resumed and self.on_resume is not None:
            self.on_resume(loop.start)
        self.bar = Progress(loop.total, loop.desc, enabled=self.progress)

    def __call__(self, loop: Loop) -> None:
        aux, dp = loop.host_aux(), loop.launcher
        records = dp.log_records(loop.step, loop.epoch, aux, loop.examples_per_s(), self.valid_loss)
        for on_log, record in zip(self.on_log, records, strict=False):
            if on_log is not None:
                on_log(loop.step, {**record, **loop.record})
        self.bar.update(loop.step - loop.start, **dp.progress_fields(aux))


class Signals(Hook):
    """SIGTERM / SIGINT while the run is going: the current step is checkpointed (instead of
    any scheduled save of that step, so this hook goes before `checkpoint` in the list), then
    TrainingInterrupted, whose message says how to resume."""

    every = 1

    def __init__(self, checkpoint: Checkpoint):
        self.checkpoint = checkpoint
        self.stop: SignalStop | None = None

    def start(self, loop: Loop) -> None:
        """Catches SIGTERM / SIGINT from here on; `close` restores the previous handlers."""
        self.stop = SignalStop(enabled=True).__enter__()

    def __call__(self, loop: Loop) -> None:
        if self.stop.signum is None:
            return
        self.checkpoint.save(loop, force=True)
        self.checkpoint.wait()
        name = signal.Signals(self.stop.signum).name
        raise TrainingInterrupted(
            f"{loop.desc}: {name} at step {loop.step}; checkpoint saved in "
            f"{self.checkpoint.directory}; run the same command again to resume",
            self.stop.signum,
        )

    def close(self) -> None:
        if self.stop is not None:
            self.stop.__exit__(None, None, None)
            self.stop = None
