"""Where a run's wall time goes: seconds per phase (data, compile, train, evaluate, write).

A study on an accelerator is only as fast as its slowest host-side part, and a step profile
cannot show that part. `clock()` opens a measurement; functions marked `@timed("phase")`
charge their wall time to that phase while one is open (and cost one `perf_counter` pair
otherwise). Phases nest: time spent in an inner phase is charged to the inner one only, so
the figures add up to the clock's wall time (the rest is "other"). XLA's tracing, lowering
and compiling, reported by `jax.monitoring`, are charged to "compile" and taken out of
whichever phase triggered them, so "train" is the steps themselves.

    with phases.clock() as seconds:
        experiment.run(cfg, wd)
    seconds()  # -> {"data": 1.2, "compile": 9.8, "train": 30.1, ..., "other": 0.4}
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections.abc import Callable, Iterator

PHASES = ("data", "compile", "train", "evaluate", "write", "other")
# jax.monitoring's duration events for turning a traced function into an executable; they
# run one after another (not nested), so their sum is the compile time
_COMPILE_EVENTS = (
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "/jax/core/compile/backend_compile_duration",
)


class _Frame:
    __slots__ = ("inner", "phase", "start")

    def __init__(self, phase: str):
        self.phase, self.start, self.inner = phase, time.perf_counter(), 0.0


class _Clock:
    """One open measurement: totals per phase and the stack of open phases (main thread's)."""

    def __init__(self):
        self.totals = dict.fromkeys(PHASES, 0.0)
        self.stack: list[_Frame] = []
        self.start = time.perf_counter()
        self.thread = threading.get_ident()

    def compiled(self, seconds: float) -> None:
        self.totals["compile"] += seconds
        if self.stack:  # the phase that asked for the program does not pay for building it
            self.stack[-1].inner += seconds

    def seconds(self) -> dict[str, float]:
        wall = time.perf_counter() - self.start
        out = dict(self.totals)
        out["other"] = max(wall - sum(v for k, v in out.items() if k != "other"), 0.0)
        return out


_active: _Clock | None = None
_listening = False


def _on_event(event: str, secs: float, **_) -> None:
    clk = _active
    if clk is not None and event in _COMPILE_EVENTS and threading.get_ident() == clk.thread:
        clk.compiled(secs)


def _listen() -> None:
    global _listening
    if not _listening:  # once per process: jax keeps listeners for its lifetime
        import jax.monitoring

        jax.monitoring.register_event_duration_secs_listener(_on_event)
        _listening = True


@contextlib.contextmanager
def clock() -> Iterator[Callable[[], dict[str, float]]]:
    """Measures the phases of the code inside; yields a function that returns the seconds per
    phase so far (every name in PHASES; "other" = wall time no phase claimed). Clocks do not
    nest: an inner `clock()` raises, so no figure is counted twice."""
    global _active
    if _active is not None:
        raise RuntimeError("phases.clock() is already open")
    _listen()
    _active = clk = _Clock()
    try:
        yield clk.seconds
    finally:
        _active = None


@contextlib.contextmanager
def phase(name: str) -> Iterator[None]:
    """Charges the wall time inside to `name` (one of PHASES) when a clock is open on this
    thread; a no-op otherwise."""
    if name not in PHASES:
        raise ValueError(f"phase {name!r}: one of {PHASES}")
    clk = _active
    if clk is None or threading.get_ident() != clk.thread:
        yield
        return
    frame = _Frame(name)
    clk.stack.append(frame)
    try:
        yield
    finally:
        clk.stack.pop()
        elapsed = time.perf_counter() - frame.start
        clk.totals[name] += elapsed - frame.inner
        if clk.stack:
            clk.stack[-1].inner += elapsed


def timed(name: str) -> Callable:
    """Decorator: every call of the function runs inside `phase(name)`."""

    def wrap(fn):
        @functools.wraps(fn)
        def inner(*args, **kwargs):
            with phase(name):
                return fn(*args, **kwargs)

        return inner

    return wrap


def render(seconds: dict[str, float]) -> str:
    """One line: each phase's seconds and share of the total, in PHASES order."""
    total = sum(seconds.values()) or 1.0
    parts = [
        f"{k} {seconds.get(k, 0.0):.1f}s ({100 * seconds.get(k, 0.0) / total:.0f}%)" for k in PHASES
    ]
    return ", ".join(parts)
