"""README.md's "Run the tests" commands are the ones .ci/run runs, line for line."""

import re


def _bash_blocks(text: str) -> list[list[str]]:
    return [b.strip().splitlines() for b in re.findall(r"```bash\n(.*?)```", text, re.S)]


def test_readme_test_commands_are_ci_run_lines(repo):
    ci = [
        line
        for line in (repo / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    blocks = _bash_blocks((repo / "README.md").read_text())
    pinned = ["python3 -m pytest -q"]
    latest = next(b for b in blocks if b and b[0] == "PY=$(bash .ci/latest-python)")
    assert pinned in blocks
    assert latest[-1] == '.venv-latest/bin/python -m pytest -q -m "not slow"'
    # .ci/run runs the pinned command as a line of its own, then the latest block's lines in a row.
    first = ci.index(pinned[0])
    starts = [i for i in range(len(ci)) if ci[i : i + len(latest)] == latest]
    assert starts and starts[0] > first, (latest, ci)
