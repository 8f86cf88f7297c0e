"""Test-session set-up: a persistent XLA cache so reruns and CI skip recompilation, the
background jobs (tests/background.py), and the smoke runs that several test files read (each
made once per session)."""

import os
import runpy

# XLA compiles without LLVM's optimisation passes (--xla_backend_optimization_level=0), in this
# process and, through the environment, in the processes the tests start. Compiling is most
# of the suite's time and takes about half as long so; what the tests check does not depend
# on how fast the compiled code runs (results agree to float32 rounding, and every comparison
# in the suite is between programs compiled the same way). AUTOHERI_TEST_XLA_OPT=1 compiles
# as users do (XLA's default). Set before JAX starts its backend, which reads XLA_FLAGS once.
if os.environ.get("AUTOHERI_TEST_XLA_OPT") != "1":
    _flags = os.environ.get("XLA_FLAGS", "")
    if "--xla_backend_optimization_level" not in _flags:
        os.environ["XLA_FLAGS"] = f"{_flags} --xla_backend_optimization_level=0".strip()

from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import background
from tests.helpers import use_test_compilation_cache

use_test_compilation_cache()

REPO = Path(__file__).resolve().parents[1]
SMOKE = str(REPO / "experiments" / "configs" / "smoke.py")
# AUTOHERI_TEST_BACKGROUND=0: every test in file order, its background jobs run in the test
BACKGROUND = os.environ.get("AUTOHERI_TEST_BACKGROUND", "1") != "0"


def pytest_collection_modifyitems(config, items):
    """The tests that check background jobs run last, when their jobs have mostly finished
    (otherwise in the usual order)."""
    if BACKGROUND:
        items[:] = [i for i in items if not background.jobs_of(i)] + [
            i for i in items if background.jobs_of(i)
        ]


@pytest.fixture(scope="session", autouse=True)
def _background_jobs(request, tmp_path_factory):
    """Starts the jobs of the selected tests, in the order of their tests; stops what is left
    at the end of the session."""
    background.set_factory(tmp_path_factory)
    if BACKGROUND:
        items = request.session.items
        background.start(list(dict.fromkeys(j for i in items for j in background.jobs_of(i))))
    yield
    background.stop()


@pytest.fixture
def repo() -> Path:
    return REPO


@dataclass(frozen=True)
class SmokeRun:
    """A finished `autoheri run` of experiments/configs/smoke.py. Shared by every test that
    asks for it: read it, never write into it (copy `workdir` first to change a workdir)."""

    workdir: Path
    stdout: str  # what the run printed
    export: Path | None = None  # `autoheri export` of its autoheri model, where made


# The runs are background jobs (tests/background.py): `autoheri` commands in their own
# processes, made while the in-process tests run; the tests that use them run last.


@background.job
def smoke_masked(tmp: Path) -> SmokeRun:
    """The smoke config as written (the default masked search), then `autoheri export`."""
    wd, out = tmp / "wd", tmp / "export"
    run = background.cli("run", "--config", SMOKE, "--workdir", wd, "--no-progress")
    background.cli("export", "--workdir", wd, "--out", out)
    return SmokeRun(wd, run.stdout, out)


@background.job
def smoke_gradient(tmp: Path) -> SmokeRun:
    """The smoke config with edge_search.method=gradient: a search that logs edge gates."""
    wd = tmp / "wd"
    gradient = [a for o in runpy.run_path(SMOKE)["GRADIENT"] for a in ("--set", o)]
    run = background.cli("run", "--config", SMOKE, "--workdir", wd, "--no-progress", *gradient)
    return SmokeRun(wd, run.stdout)


@pytest.fixture(scope="session")
def smoke_run() -> SmokeRun:
    return smoke_masked.result()


@pytest.fixture(scope="session")
def smoke_gradient_run() -> SmokeRun:
    return smoke_gradient.result()


background.FIXTURE_JOBS.update(smoke_run=smoke_masked, smoke_gradient_run=smoke_gradient)
