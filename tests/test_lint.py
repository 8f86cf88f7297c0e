"""The whole tree stays ruff-clean (lint and format), checked with the repo's own config."""

import shutil
import subprocess

import pytest

RUFF = shutil.which("ruff")


@pytest.mark.skipif(RUFF is None, reason="ruff is not installed (pip install -r requirements.txt)")
@pytest.mark.parametrize("args", [["check", "."], ["format", "--check", "."]])
def test_ruff(repo, args):
    out = subprocess.run([RUFF, *args], cwd=repo, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
