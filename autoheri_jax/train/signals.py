"""SIGTERM / SIGINT as requests to stop at a safe point, never in the middle of a write.

Two uses:
  SignalStop      the training loop polls `stop.signum` between steps and checkpoints the
                  current step before it raises TrainingInterrupted.
  deferred(what)  a block that must finish or not start (a model's final params and its
                  train.json, an architecture record): a signal that arrives inside it is held
                  until the block ends, then raised as TrainingInterrupted, so the CLI exits
                  128 + signal with the resume hint and a rerun finds either the whole save
                  or none of it.
Handlers are only installed from the main thread (Python's rule); elsewhere both are no-ops
and signals keep their default meaning.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class TrainingInterrupted(RuntimeError):
    """SIGTERM / SIGINT arrived; what was being written was finished (or a checkpoint of the
    current step saved) first. `signum` gives the CLI its exit status, 128 + signum."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum


class SignalStop:
    """Catches SIGTERM / SIGINT while active (main thread only), so the loop can checkpoint
    the current step before stopping; the previous handlers come back on exit. `signum`:
    the last signal that arrived, None while none has."""

    def __init__(self, enabled: bool):
        self.enabled, self.signum, self._previous = enabled, None, {}

    def __enter__(self) -> SignalStop:
        if self.enabled and threading.current_thread() is threading.main_thread():

            def handler(signum, _frame):
                self.signum = signum

            self._previous = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, h in self._previous.items():
            signal.signal(s, h)


@contextlib.contextmanager
def deferred(what: str, hint: str = "run the same command again to resume") -> Iterator[None]:
    """Runs the block with SIGTERM / SIGINT held; one that arrived is raised after it as
    TrainingInterrupted naming `what` (the block's write, e.g. "saving models/esmm/params").
    An exception from the block itself wins: the write failed, and that is the news."""
    with SignalStop(enabled=True) as stop:
        yield
    if stop.signum is not None:
        name = signal.Signals(stop.signum).name
        message = f"{name} while {what}; it was completed first; {hint}"
        raise TrainingInterrupted(message, stop.signum)
