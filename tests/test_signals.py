"""SIGINT / SIGTERM inside a save: the save completes, the CLI exits 128 + signal with the
resume hint, and the rerun ends where an uninterrupted run ends."""

from __future__ import annotations

import json
import os
import signal
import time

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
    sig, tmp_path, monkeypatch, capsys, smoke_run
):
    reference = smoke_run.workdir  # the same command, uninterrupted (conftest.py)

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


def _kill_self(sig):
    def fire(*args, **kw):
        os.kill(os.getpid(), sig)
        time.sleep(30)  # the handler raises here, at once
        raise AssertionError("the signal did not stop the run")

    return fire


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("where", ["edge evidence", "loading the data"])
def test_a_signal_outside_training_exits_128_plus_n_with_the_hint(
    sig, where, tmp_path, monkeypatch, capsys
):
    """SIGTERM outside the training loops and saves (the edge evidence, the validated
    selection, the evaluation, loading) once died by the default action, with no message;
    now it exits as SIGINT does: 128 + N and the resume hint (issue 33)."""
    from autoheri_jax import experiment
    from autoheri_jax.search import evidence

    if where == "edge evidence":  # after the start: the search's training is skipped
        monkeypatch.setattr(experiment, "train_and_save", lambda *a, **k: None)
        monkeypatch.setattr(evidence, "edge_evidence", _kill_self(sig))
    else:
        monkeypatch.setattr(experiment, "load_data", _kill_self(sig))
    wd = tmp_path / "wd"
    args = ["search", "--config", SMOKE, "--workdir", str(wd), "--no-progress"]
    assert main(args) == 128 + sig
    err = capsys.readouterr().err
    name = signal.Signals(sig).name
    assert err == f"autoheri search: {name}; run the same command again to resume\n"
    assert (wd / "config.json").exists() == (where == "edge evidence")
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is put back
