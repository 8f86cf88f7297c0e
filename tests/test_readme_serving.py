"""The README's serving snippet runs as written against an export of the smoke model."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def _snippet() -> str:
    readme = (REPO / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    found = [b for b in blocks if "serving.runtime import load" in b]
    assert len(found) == 1, "expected one serving snippet in README.md"
    return found[0]


@pytest.mark.slow
def test_readme_serving_snippet_runs_as_written(smoke_run):
    out = smoke_run.export  # `autoheri export` of the smoke run (conftest.py)
    code = _snippet()
    assert '"exports/default"' in code
    scope: dict = {}
    exec(code.replace('"exports/default"', repr(str(out))), scope)
    scores = scope["scores"]
    assert set(scores) == {"pctr", "pcvr", "pctcvr"}
    for v in scores.values():
        assert v.shape == (2,) and v.dtype == np.float32 and np.all((v > 0) & (v < 1))
