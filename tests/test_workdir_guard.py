"""A workdir under bad input: --set errors, failed starts, a second writer, unfinished exports.

Every case ends in one line naming the key, file or process (exit 2) and leaves the workdir as
usable as before: a corrected command then runs without --fresh.
"""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from autoheri_jax.cli import main
from autoheri_jax.config import Config, ConfigError, apply_overrides
from autoheri_jax.workdir_lock import LOCK_NAME, WorkdirBusy, exclusive

SMOKE = "experiments/configs/smoke.py"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_shared = pytest.mark.skipif(
    not SHARED.is_dir(), reason=f"shared sample data not found at {SHARED}"
)
QUIET = ["--no-progress", "--set", "baselines=esmm"]


@pytest.fixture(autouse=True)
def _in_repo(repo, monkeypatch):
    monkeypatch.chdir(repo)


@pytest.mark.parametrize(
    "override, named",
    [
        ("model.hidden=[64,x]", "model.hidden=[64,x]: cannot parse; expected a list of int"),
        ("model.hidden=64,x", "model.hidden=64,x: cannot parse; expected a list of int"),
        ("search.epochs=abc", "search.epochs=abc: cannot parse; expected an integer"),
        ("search.epochs=[1]", "search.epochs=[1]: cannot parse; expected an integer"),
        ("search.lr={}", "search.lr={}: cannot parse; expected a number"),
        ("model.detach_upstream=yes", "model.detach_upstream=yes: expected true or false"),
        ("search.epochs=1.5", "search.epochs: expected int, got float 1.5"),
        ("model.fixed_edges=0.0-1.1", "fixed_edges: edge '0.0-1.1' must look like 'u.i->d.j'"),
        ("model.fixed_edges=0.0->1.5", "edge '0.0->1.5': layers must lie in [0, 2)"),
        ("model.fixed_edges=0.0->2.1", "edge '0.0->2.1': task 2 but data.num_stages=2"),
        ("model.nope=1", "unknown config key 'model.nope'"),
        ("model.hidden", "override 'model.hidden' must look like key=value"),
    ],
)
def test_every_set_error_exits_2_naming_the_key_before_anything_is_written(
    override, named, tmp_path, capsys
):
    wd = tmp_path / "run"
    edge = ["--set", "model.edge_mode=fixed"] if "fixed_edges" in override else []
    assert main(["search", "--config", SMOKE, "--workdir", str(wd), *edge, "--set", override]) == 2
    err = capsys.readouterr().err
    assert named in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not wd.exists()  # not even the directory


def test_set_lists_take_brackets_or_commas_and_bare_edge_names():
    fixed = ["model.edge_mode=fixed"]
    for text in ("[0.0->1.1,0.1->1.1]", "0.0->1.1,0.1->1.1", '["0.0->1.1","0.1->1.1"]'):
        cfg = apply_overrides(Config(), [*fixed, f"model.fixed_edges={text}"])
        assert cfg.model.fixed_edges == ("0.0->1.1", "0.1->1.1"), text
    for text in ("[64,32]", "64,32", " 64, 32 "):
        assert apply_overrides(Config(), [f"model.hidden={text}"]).model.hidden == (64, 32)
    with pytest.raises(ConfigError, match=r"model\.hidden=\[64,null\]"):
        apply_overrides(Config(), ["model.hidden=[64,null]"])


@pytest.mark.slow
def test_a_start_that_failed_on_its_data_does_not_block_the_corrected_command(tmp_path, capsys):
    wd = tmp_path / "run"
    missing = tmp_path / "no_such_file.csv"
    assert (
        main(["search", "--config", SMOKE, "--workdir", str(wd), "--data", str(missing), *QUIET])
        == 2
    )
    assert f"{missing}: no such file or directory" in capsys.readouterr().err
    assert not (wd / "config.json").exists()
    # the corrected command: no --fresh, no "searched with another config"
    assert main(["search", "--config", SMOKE, "--workdir", str(wd), *QUIET]) == 0
    assert json.loads((wd / "config.json").read_text())["data"]["source"] == "simulator"
    assert (wd / "architecture.json").is_file()


@needs_shared
def test_a_store_without_a_test_split_is_refused_before_anything_is_recorded(tmp_path, capsys):
    """A store prepared from one file has no test split: refused, naming the store."""
    wd = tmp_path / "run"
    store = tmp_path / "store"
    train = SHARED / "ali-ccp" / "torch-rechub" / "ali_ccp_train_sample.csv"
    assert main(["prepare", "--data", str(train), "--out", str(store), "--quiet"]) == 0
    assert (
        main(["search", "--config", SMOKE, "--workdir", str(wd), "--data", str(store), *QUIET]) == 2
    )
    err = capsys.readouterr().err
    assert str(store) in err and "no test split" in err and "Traceback" not in err
    assert not (wd / "config.json").exists()


@pytest.mark.parametrize("key", ["search.batch_size", "retrain.batch_size"])
def test_a_batch_larger_than_a_files_rows_is_refused_before_config_is_recorded(
    tmp_path, capsys, monkeypatch, key
):
    """Config validation knows the simulator's row counts only: for a file the check runs on
    the loaded rows, inside the start, so the corrected command is a new start (issue 33)."""
    from autoheri_jax import experiment
    from tests.test_no_overwrite import aitm_dir

    data, wd = aitm_dir(tmp_path / "data"), tmp_path / "run"
    other = "retrain.batch_size" if key == "search.batch_size" else "search.batch_size"
    cmd = [
        "search",
        "--config",
        SMOKE,
        "--workdir",
        str(wd),
        "--data",
        str(data),
        *QUIET,
        "--set",
        f"{other}=8",
    ]
    assert main([*cmd, "--set", f"{key}=100000"]) == 2
    err = capsys.readouterr().err
    assert f"{key}=100000 exceeds the " in err and str(data) in err
    assert len(err.strip().splitlines()) == 1 and not (wd / "config.json").exists()

    def stop(*args, **kw):  # past the start: config.json is written; no need to train
        raise ConfigError("stopped after the start")

    monkeypatch.setattr(experiment, "train_and_save", stop)
    assert main([*cmd, "--set", f"{key}=8"]) == 2
    err = capsys.readouterr().err
    assert "stopped after the start" in err and "another config" not in err
    assert json.loads((wd / "config.json").read_text())[key.split(".")[0]]["batch_size"] == 8


@pytest.mark.slow
def test_a_start_that_failed_on_its_model_leaves_no_config(tmp_path, capsys, monkeypatch):
    """An error raised while the model is built on the loaded data (an edge the data cannot
    carry) stops the start before config.json, so the corrected command is a new start."""
    from autoheri_jax import experiment

    wd = tmp_path / "run"
    real = experiment.spec_for

    def refuse(*args):
        real(*args)
        raise ConfigError("model.fixed_edges: edge into stage 2 of 2")

    monkeypatch.setattr(experiment, "spec_for", refuse)
    assert main(["search", "--config", SMOKE, "--workdir", str(wd), *QUIET]) == 2
    assert "edge into stage 2 of 2" in capsys.readouterr().err
    assert not (wd / "config.json").exists()
    monkeypatch.setattr(experiment, "spec_for", real)
    assert (
        main(
            ["search", "--config", SMOKE, "--workdir", str(wd), *QUIET, "--set", "search.lr=0.004"]
        )
        == 0
    )


def test_the_lock_names_its_holder_and_a_dead_holder_never_blocks(tmp_path):
    wd = tmp_path / "run"
    with exclusive(wd, "autoheri run"):
        assert (wd / LOCK_NAME).read_text().split() == [str(os.getpid()), "autoheri", "run"]
        busy = pytest.raises(WorkdirBusy, match=rf"process {os.getpid()} \(autoheri run\)")
        with busy, exclusive(wd, "autoheri search"):
            pass
    assert (wd / LOCK_NAME).read_text() == ""  # released
    # a holder killed with the lock held: its PID stays in the file, the lock does not
    code = f"from autoheri_jax.workdir_lock import exclusive\nwith exclusive({str(wd)!r}, 'x'):\n"
    code += "    import os; os.kill(os.getpid(), 9)"
    dead = subprocess.Popen([sys.executable, "-c", code])
    assert dead.wait(timeout=60) == -9
    assert (wd / LOCK_NAME).read_text().startswith(f"{dead.pid} ")  # the stale record stays
    with exclusive(wd, "autoheri run"):
        assert (wd / LOCK_NAME).read_text().startswith(f"{os.getpid()} ")


@pytest.mark.slow
def test_a_second_writer_is_refused_while_the_first_finishes_unchanged(tmp_path, capsys, repo):
    wd, reference = tmp_path / "run", tmp_path / "reference"
    assert main(["search", "--config", SMOKE, "--workdir", str(reference), *QUIET]) == 0
    env = {**os.environ, "PYTHONPATH": str(repo)}
    command = [
        sys.executable,
        "-m",
        "autoheri_jax",
        "search",
        "--config",
        SMOKE,
        "--workdir",
        str(wd),
        *QUIET,
    ]
    first = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    lock = wd / LOCK_NAME
    deadline = time.monotonic() + 120
    while not (lock.is_file() and lock.read_text().startswith(f"{first.pid} ")):
        assert first.poll() is None, first.stderr.read()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    capsys.readouterr()
    assert main(["search", "--config", SMOKE, "--workdir", str(wd), *QUIET]) == 2
    err = capsys.readouterr().err
    assert f"is in use by process {first.pid} (autoheri search)" in err
    assert len(err.strip().splitlines()) == 1
    assert first.wait(timeout=300) == 0, first.stderr.read()
    arch = [json.loads((d / "architecture.json").read_text()) for d in (wd, reference)]
    assert arch[0] == arch[1]

    def records(d):  # every log point once, equal but for the wall-clock throughput
        lines = (d / "metrics.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(r).items() if k != "examples_per_s"} for r in lines]

    assert records(wd) == records(reference)


@pytest.mark.slow
def test_export_refuses_an_unevaluated_model_unless_allowed(tmp_path, capsys, smoke_run):
    wd, out = tmp_path / "run", tmp_path / "export"
    # searched and retrained, not evaluated: the shared smoke run (conftest.py) without the
    # one file `autoheri evaluate` writes
    shutil.copytree(smoke_run.workdir, wd)
    (wd / "results.json").unlink()
    assert main(["export", "--workdir", str(wd), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "autoheri of" in err and "is unfinished" in err and "--allow-unfinished" in err
    assert "autoheri evaluate --workdir" in err and not out.exists()
    assert main(["export", "--workdir", str(wd), "--out", str(out), "--allow-unfinished"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert "results.json is missing" in manifest["unfinished"] and manifest["metrics"] is None
    assert main(["evaluate", "--workdir", str(wd)]) == 0
    assert main(["export", "--workdir", str(wd), "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert "unfinished" not in manifest and manifest["metrics"]["cvr"]["auc"] > 0
