"""Background jobs: the subprocess-bound part of a test (a benchmark script, runs killed and
resumed, multi-device processes), started on one worker thread when the session starts.

Why: the in-process tests keep one core busy (most of their time is XLA compiling, on one
thread), so one of CI's two cores would sit idle while they run; a job's child processes use
it. conftest.py queues the jobs of the selected tests when the session starts
(`AUTOHERI_TEST_BACKGROUND=0` turns this off) and moves those tests to the end of the run,
when their jobs have mostly finished.

A job is a function of one argument, a fresh temporary directory, decorated with `@job`; it
starts processes (through `run` and `popen` here, so that a session that ends early stops
them) and returns what the test checks. The test calls `<job>.result()`: a job not started
yet runs then, in the test (so `-k` or a single test waits for nothing else); a started job
is waited for; what the job raised is raised in the test. Jobs write only under their own
directory and read nothing another job or test writes, so no result depends on when a job
ran. Checks that need JAX in this process stay in the test, on the main thread.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_lock = threading.Lock()
_queue: list[Job] = []
_wake = threading.Condition(_lock)
_children: list[subprocess.Popen] = []
_factory = None  # pytest's tmp_path_factory, set by conftest.py at the start of the session
_closed = False


class Job:
    def __init__(self, fn: Callable[[Path], object]):
        self.fn, self.name = fn, fn.__name__
        self.state = "idle"  # idle -> queued -> running -> done
        self._done = threading.Event()
        self._value: object = None
        self._error: BaseException | None = None

    def __repr__(self) -> str:
        return f"<background job {self.name}: {self.state}>"

    def _run(self) -> None:
        try:
            self._value = self.fn(_factory.mktemp(self.name))
        except BaseException as e:  # handed to the test that asks for the result
            self._error = e
        finally:
            self.state = "done"
            self._done.set()

    def result(self):
        with _lock:
            here = self.state in ("idle", "queued")
            if here:
                self.state = "running"
        if here:
            self._run()
        self._done.wait()
        if self._error is not None:
            raise self._error
        return self._value


def job(fn: Callable[[Path], object]) -> Job:
    return Job(fn)


def uses(*jobs: Job):
    """The mark of a test (or of one parameter set, through pytest.param's marks) that checks
    what `jobs` return: they are queued when the test is selected."""
    return pytest.mark.background(*jobs)


FIXTURE_JOBS: dict[str, Job] = {}  # fixture name -> the job it returns the result of


def jobs_of(item) -> list[Job]:
    """The jobs a collected test checks: its marks', and those of the fixtures it uses."""
    marked = [j for m in item.iter_markers("background") for j in m.args]
    names = getattr(item, "fixturenames", ())
    return marked + [j for name, j in FIXTURE_JOBS.items() if name in names]


def _worker() -> None:
    while True:
        with _lock:
            while not _queue and not _closed:
                _wake.wait()
            if _closed:
                return
            j = _queue.pop(0)
            if j.state != "queued":  # a test took it already
                continue
            j.state = "running"
        j._run()


def start(jobs: list[Job]) -> None:
    """Queues `jobs` in order on the worker thread (conftest.py, at the start of the session)."""
    with _lock:
        for j in jobs:
            if j.state == "idle":
                j.state = "queued"
                _queue.append(j)
        _wake.notify_all()
    if jobs:
        threading.Thread(target=_worker, name="background-jobs", daemon=True).start()


def set_factory(factory) -> None:
    global _factory
    _factory = factory


def stop() -> None:
    """End of the session: nothing more starts, and child processes still running are killed
    (a session cut short leaves no orphans)."""
    global _closed
    with _lock:
        _closed = True
        _queue.clear()
        _wake.notify_all()
        alive = [p for p in _children if p.poll() is None]
    for p in alive:
        p.kill()


def popen(cmd, **kw) -> subprocess.Popen:
    """subprocess.Popen, remembered so that `stop` can kill it."""
    with _lock:
        if _closed:
            raise RuntimeError("the test session has ended")
        p = subprocess.Popen(cmd, **kw)
        _children.append(p)
    return p


def run(cmd, *, timeout: float | None = None, **kw) -> subprocess.CompletedProcess:
    """subprocess.run(cmd, capture_output=True, text=True, ...) through `popen`."""
    p = popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)
    try:
        out, err = p.communicate(timeout=timeout)
    except BaseException:
        p.kill()
        p.communicate()
        raise
    return subprocess.CompletedProcess(cmd, p.returncode, out, err)


def cli(*args, timeout: float = 600) -> subprocess.CompletedProcess:
    """`python -m autoheri_jax ARGS` in the repository root, as a user runs it; it must exit 0."""
    cmd = [sys.executable, "-m", "autoheri_jax", *map(str, args)]
    out = run(cmd, cwd=REPO, timeout=timeout)
    if out.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd[3:])}: exit {out.returncode}\n{out.stdout[-2000:]}{out.stderr[-4000:]}"
        )
    return out
