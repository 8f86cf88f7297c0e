"""Data parallelism on 8 simulated CPU devices: every case in one process (the device count
is fixed per process), so the cases share their compiled steps."""

import os
import socket
import subprocess
import sys

import numpy as np
import pytest

CASES = [
    "launchers_equal_single_device",
    "sharded_tables_equal_replicated",
    "sharded_state_is_split_across_devices",
    "eight_device_runs_are_bitwise_reproducible",
    "bag_slots_on_devices_equal_the_padded_single_device",
]


@pytest.mark.slow
def test_multi_device(repo):
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    out = subprocess.run(
        [sys.executable, str(repo / "tests" / "parallel_cases.py"), *CASES],
        cwd=repo, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-6000:]
    for case in CASES:  # the output names the case that failed
        assert f"ok {case}" in out.stdout, out.stdout[-3000:]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_on_localhost_agree_with_one(repo, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one CPU device each
    worker = str(repo / "tests" / "multihost_worker.py")
    port = str(_free_port())
    procs = [
        subprocess.Popen([sys.executable, worker, str(i), "2", port, str(tmp_path / "two.npz")],
                         cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
        for i in range(2)
    ]  # fmt: skip
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, out[-2000:] + err[-4000:]
        assert "ok" in out and out.strip().endswith("2")  # two global devices
    cmd = [sys.executable, worker, "0", "1", "0", str(tmp_path / "one.npz")]
    ref = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    assert ref.returncode == 0, ref.stderr[-4000:]
    two, one = np.load(tmp_path / "two.npz"), np.load(tmp_path / "one.npz")
    assert sorted(two.files) == sorted(one.files)
    for k in one.files:  # summation order differs across processes: same tolerance as above
        np.testing.assert_allclose(two[k], one[k], rtol=2e-5, atol=1e-5, err_msg=k)
