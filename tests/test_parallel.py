"""Data parallelism on 8 simulated CPU devices (each case in its own process)."""

import os
import subprocess
import sys

import pytest

CASES = [
    "launchers_equal_single_device",
    "sharded_tables_equal_replicated",
    "sharded_state_is_split_across_devices",
    "eight_device_runs_are_bitwise_reproducible",
]


@pytest.mark.parametrize("case", CASES)
def test_multi_device(repo, case):
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    out = subprocess.run(
        [sys.executable, str(repo / "tests" / "parallel_cases.py"), case],
        cwd=repo, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-6000:]
    assert f"ok {case}" in out.stdout
