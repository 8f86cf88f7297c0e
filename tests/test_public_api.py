"""The package's public API (autoheri_jax/__init__.py): every name resolves, the import stays
light, and `run` does what `autoheri run` does."""

import json
import subprocess
import sys

import pytest

import autoheri_jax as ah


def test_every_public_name_resolves_and_unknown_names_are_refused():
    for name in ah.__all__:
        assert getattr(ah, name) is not None, name
    assert ah.export.__name__ == "export_workdir" and ah.load_exported.__module__.endswith(
        "serving.runtime"
    )
    assert set(dir(ah)) == set(ah.__all__)
    with pytest.raises(AttributeError, match="no attribute 'fit'"):
        ah.fit  # noqa: B018


def test_importing_the_package_does_not_import_jax():
    code = "import sys, autoheri_jax; print('jax' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.slow
def test_run_from_python_matches_the_cli_run(repo, tmp_path):
    from autoheri_jax.cli import main

    cfg = ah.load_config(repo / "experiments" / "configs" / "smoke.py")
    res = ah.run(cfg, tmp_path / "api")
    assert (
        main(
            [
                "run",
                "--config",
                str(repo / "experiments" / "configs" / "smoke.py"),
                "--workdir",
                str(tmp_path / "cli"),
                "--no-progress",
            ]
        )
        == 0
    )
    cli = json.loads((tmp_path / "cli" / "results.json").read_text())
    assert res["models"].keys() == cli["models"].keys()
    for name, model in res["models"].items():  # same seed, machine and code: bitwise
        assert model["test"] == cli["models"][name]["test"], name
