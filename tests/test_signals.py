"""SIGINT / SIGTERM inside a save: the save completes, the CLI exits 128 + signal with the
resume hint, and the rerun ends where an uninterrupted run ends."""

from __future__ import annotations

import json
import os
import signal

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from autoheri_jax import artifacts
from autoheri_jax.cli import main
from autoheri_jax.train.signals import TrainingInterrupted, deferred

SMOKE = "experiments/configs/smoke.py"


def _run(workdir) -> int:
    return main(["run", "--config", SMOKE, "--workdir", str(workdir), "--no-progress"])


def _params(workdir, model: str):
    with ocp.StandardCheckpointer() as ckptr:
        return jax.device_get(ckptr.restore(workdir / "models" / model / "params"))


def test_a_signal_inside_a_deferred_block_is_raised_after_it():
    done = []
    expected = pytest.raises(TrainingInterrupted, match="SIGTERM while writing x")
    with expected as err, deferred("writing x"):
        os.kill(os.getpid(), signal.SIGTERM)
        done.append(True)  # the block goes on to its end
    assert done == [True] and err.value.signum == signal.SIGTERM
    # an error of the block itself is the news, not the signal that came with it
    with pytest.raises(OSError, match="disk full"), deferred("writing y"):
        os.kill(os.getpid(), signal.SIGINT)
        raise OSError("disk full")


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_during_the_final_save_exits_with_the_hint_and_resumes(
    sig, tmp_path, monkeypatch, capsys
):
    reference = tmp_path / "reference"
    assert _run(reference) == 0

    original = artifacts.Workdir.save_params
    fired = []

    def signalling_save(self, model, params):
        if model == "autoheri" and not fired:  # the derived model's final params
            fired.append(model)
            os.kill(os.getpid(), sig)
        return original(self, model, params)

    monkeypatch.setattr(artifacts.Workdir, "save_params", signalling_save)
    wd = tmp_path / "interrupted"
    assert _run(wd) == 128 + sig
    err = capsys.readouterr().err
    assert f"{signal.Signals(sig).name} while saving models/autoheri" in err
    assert "run the same command again to resume" in err and "Traceback" not in err
    assert (wd / "models" / "autoheri" / "train.json").exists()  # the save was completed
    assert not (wd / "results.json").exists()

    assert _run(wd) == 0  # resumes: trained models are reused, the rest runs
    ref = json.loads((reference / "results.json").read_text())
    got = json.loads((wd / "results.json").read_text())
    assert set(got["models"]) == set(ref["models"])
    for model, rec in ref["models"].items():
        assert got["models"][model]["test"] == rec["test"], model  # bitwise the same scores
    for model in ("autoheri", "esmm"):
        jax.tree.map(np.testing.assert_array_equal, _params(wd, model), _params(reference, model))
