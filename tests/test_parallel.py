"""Data parallelism on 8 simulated CPU devices: every case in one process (the device count
is fixed per process), so the cases share their compiled steps."""

import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from autoheri_jax.config import ParallelConfig
from autoheri_jax.train.fit import train_model
from tests import background
from tests.helpers import child_env, parallel_setup

CASES = [
    "launchers_equal_single_device",
    "mesh_draws_the_single_device_dropout",
    "mesh_step_is_one_partitioned_program",
    "sharded_tables_equal_replicated",
    "sharded_state_is_split_across_devices",
    "eight_device_runs_are_bitwise_reproducible",
    "bag_slots_on_devices_equal_the_padded_single_device",
]


REPO = Path(__file__).resolve().parents[1]

# The processes run as background jobs (tests/background.py); the tests check what they wrote.


@background.job
def eight_device_cases(tmp: Path) -> subprocess.CompletedProcess:
    env = child_env(8)
    cmd = [sys.executable, str(REPO / "tests" / "parallel_cases.py"), *CASES]
    return background.run(cmd, cwd=REPO, env=env, timeout=900)


@pytest.mark.slow
@background.uses(eight_device_cases)
def test_multi_device():
    out = eight_device_cases.result()
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-6000:]
    for case in CASES:  # the output names the case that failed
        assert f"ok {case}" in out.stdout, out.stdout[-3000:]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@background.job
def two_processes(tmp: Path) -> tuple[list, Path]:
    """-> ((returncode, stdout, stderr) per process, the parameters process 0 saved)."""
    env = child_env()  # one CPU device each
    worker = str(REPO / "tests" / "multihost_worker.py")
    port = str(_free_port())
    procs = [
        background.popen(
            [sys.executable, worker, str(i), "2", port, str(tmp / "two.npz")],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    try:
        outputs = [p.communicate(timeout=600) for p in procs]
    finally:
        for p in procs:
            p.kill()  # no-op for a process that ended
    return [(p.returncode, *o) for p, o in zip(procs, outputs, strict=True)], tmp


@pytest.mark.slow
@background.uses(two_processes)
def test_two_processes_on_localhost_agree_with_one():
    ran, tmp_path = two_processes.result()
    for code, out, err in ran:
        assert code == 0, out[-2000:] + err[-4000:]
        assert "ok" in out and out.strip().endswith("2")  # two global devices
    # the single-process run the worker makes with NUM_PROCESSES 1, in this process (one CPU
    # device): no distributed start-up, the same mesh launcher and data
    data, spec, cfg = parallel_setup(True)
    pcfg = ParallelConfig(
        launcher="mesh",
        num_processes=1,
        process_id=0,
        coordinator="127.0.0.1:0",
        cpu_collectives="gloo",
    )
    state, stats = train_model(spec, cfg, data, desc="p0", progress=False, parallel=pcfg)
    assert stats["devices"] == 1
    one = {
        jax.tree_util.keystr(k): np.asarray(v)
        for k, v in jax.tree_util.tree_leaves_with_path(state.params)
    }
    two = np.load(tmp_path / "two.npz")
    assert sorted(two.files) == sorted(one)
    for k in one:  # summation order differs across processes: parallel_cases.py's tolerance
        np.testing.assert_allclose(two[k], one[k], rtol=2e-5, atol=1e-5, err_msg=k)
