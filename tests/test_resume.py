"""Exact resumption: a run killed at a random step and resumed ends bitwise where an
uninterrupted run ends; plus SIGTERM saves, non-finite stops and refused checkpoints."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from autoheri_jax.config import CheckpointConfig, ModelConfig, SearchConfig
from autoheri_jax.data.simulator import simulate_funnel
from autoheri_jax.model.build import build_spec
from autoheri_jax.train.checkpoint import Checkpointer, CheckpointError
from autoheri_jax.train.loop import NonFiniteLossError, Resumable, fingerprint, train

SMOKE = "experiments/configs/smoke.py"
# 64 search steps and 64 per retrained model, a checkpoint every 3: room to kill mid-phase.
# No validated selection: its batch would train ESMM and the derived model as its lanes
# (tests/test_lane_reuse.py resumes that batch), and here the retrain is killed and resumed.
LONGER = ["--set", "data.num_train=16384", "--set", "checkpoint.every_steps=3",
          "--set", "baselines=esmm", "--set", "edge_search.select=off",
          "--no-progress"]  # fmt: skip
MODELS = ("autoheri_search", "autoheri", "esmm")


def _cmd(workdir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "autoheri_jax", "run", "--config", SMOKE,
            "--workdir", str(workdir), *LONGER, *extra]  # fmt: skip


def _env(devices: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    if devices > 1:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return env


def _params(workdir: Path) -> dict:
    out = {}
    with ocp.StandardCheckpointer() as ckptr:
        for m in MODELS:
            out[m] = jax.device_get(ckptr.restore(workdir / "models" / m / "params"))
    return out


def _records(workdir: Path) -> list[dict]:
    path = workdir / "metrics.jsonl"
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    return [json.loads(x) for x in lines if x.endswith("}")]


def _kill_when(repo, workdir, devices, phase, model, min_step, sig=signal.SIGKILL, extra=()):
    """Starts a run and sends `sig` once `model` has logged a step >= min_step in `phase`."""
    proc = subprocess.Popen(_cmd(workdir, *extra), cwd=repo, env=_env(devices),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        seen = [r for r in _records(workdir) if r["phase"] == phase and r["model"] == model]
        if seen and seen[-1]["step"] >= min_step:
            proc.send_signal(sig)
            break
        time.sleep(0.01)
    out, err = proc.communicate(timeout=300)
    return proc.returncode, out, err


def _run(repo, workdir, devices, *extra):
    out = subprocess.run(_cmd(workdir, *extra), cwd=repo, env=_env(devices),
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    return out


def _assert_bitwise(a: dict, b: dict) -> None:
    for m in MODELS:
        jax.tree.map(np.testing.assert_array_equal, a[m], b[m])


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Uninterrupted runs, one per device count, made once and shared by the tests below."""
    made: dict[int, Path] = {}

    def get(repo, devices: int) -> Path:
        if devices not in made:
            wd = tmp_path_factory.mktemp(f"ref{devices}")
            _run(repo, wd, devices, *_launcher(devices))
            made[devices] = wd
        return made[devices]

    return get


def _launcher(devices: int) -> tuple[str, ...]:
    return ("--set", "parallel.launcher=mesh") if devices > 1 else ()


@pytest.mark.slow
@pytest.mark.parametrize("devices", [1, 8])
def test_killed_runs_resume_to_the_uninterrupted_result(repo, tmp_path, devices, reference):
    """One workdir killed twice: during the search, then (resumed) during retraining."""
    extra = _launcher(devices)
    rng = random.Random(devices)
    wd = tmp_path / "killed"
    for phase, model in (("search", "autoheri_search"), ("retrain", "esmm")):
        code, out, _ = _kill_when(repo, wd, devices, phase, model, rng.randint(5, 40), extra=extra)
        assert code == -signal.SIGKILL
        assert not (wd / "models" / model / "train.json").exists(), "killed too late"
        assert any((wd / "checkpoints" / model).iterdir())
        if phase == "retrain":  # this run had resumed the search killed before
            assert "autoheri_search: resuming from the checkpoint at step" in out
    resumed = _run(repo, wd, devices, *extra)
    assert "esmm: resuming from the checkpoint at step" in resumed.stdout
    _assert_bitwise(_params(wd), _params(reference(repo, devices)))
    for model in ("autoheri_search", "esmm"):
        steps = [r["step"] for r in _records(wd) if r["model"] == model]
        assert steps == sorted(set(steps))  # re-logged steps replace the first telling


@pytest.mark.slow
def test_sigterm_saves_then_resumes(repo, tmp_path, reference):
    wd = tmp_path / "term"
    code, _, err = _kill_when(repo, wd, 1, "search", "autoheri_search", 10, sig=signal.SIGTERM)
    assert code == 128 + signal.SIGTERM, err[-3000:]
    assert "SIGTERM at step" in err and "run the same command again" in err
    with Checkpointer(wd / "checkpoints" / "autoheri_search") as ckpt:
        assert ckpt.latest_step() >= 10
    _run(repo, wd, 1)
    _assert_bitwise(_params(wd), _params(reference(repo, 1)))


@pytest.mark.slow
def test_eight_device_checkpoint_resumes_on_one_device(repo, tmp_path):
    wd = tmp_path / "moved"
    extra = ("--set", "parallel.launcher=mesh", "--set", "parallel.shard_embeddings=true")
    code, _, _ = _kill_when(repo, wd, 8, "search", "autoheri_search", 12, extra=extra)
    assert code == -signal.SIGKILL
    resumed = _run(repo, wd, 1, "--set", "parallel.launcher=single")
    assert "resuming from the checkpoint" in resumed.stdout
    res = json.loads((wd / "results.json").read_text())
    assert set(res["models"]) == {"autoheri", "esmm"}


# ------------------------------------------------------------------ in-process fault tests


def _tiny(n=1024):
    data = simulate_funnel(num_rows=n, seed=0, num_users=100, num_items=200, click_rate=0.2,
                           stage_rates=(0.3,), num_dense=1)  # fmt: skip
    spec = build_spec(ModelConfig(embed_dim=4, hidden=(8,)), data.vocab_sizes, 1, 2)
    cfg = SearchConfig(epochs=1, batch_size=64, arch_warmup_steps=0, lr=1e-2, log_every=1)
    return data, spec, cfg


def _resumable(path, spec, cfg, every=1):
    ck = CheckpointConfig(every_steps=every, keep=50, keep_best=False, async_save=False)
    return Resumable(path, ck, {"phase": "search"}, fingerprint(spec, cfg))


@pytest.mark.slow
def test_non_finite_loss_names_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    data, spec, cfg = _tiny()
    from autoheri_jax.data.pipeline import StepBatchSource

    bad_step = 6  # the 7th update sees the NaN row
    row = int(StepBatchSource(data, 64, cfg.seed, 1).indices(bad_step)[0])
    dense = data.dense.copy()
    dense[row] = np.nan
    poisoned = dataclasses.replace(data, dense=dense)
    with pytest.raises(NonFiniteLossError, match=f"step {bad_step} "):
        train(spec, cfg, poisoned, desc="x", progress=False,
              resumable=_resumable(tmp_path / "ck", spec, cfg))  # fmt: skip
    with Checkpointer(tmp_path / "ck") as ckpt:
        assert ckpt.latest_step() == bad_step  # state after the last good update


def test_checkpoint_of_another_config_is_refused_naming_the_key(tmp_path):
    data, spec, cfg = _tiny(256)
    train(spec, cfg, data, desc="a", progress=False,
          resumable=_resumable(tmp_path / "ck", spec, cfg, every=2))  # fmt: skip
    other = dataclasses.replace(cfg, lr=5e-3)
    with pytest.raises(CheckpointError, match="lr"):
        train(spec, other, data, desc="b", progress=False,
              resumable=_resumable(tmp_path / "ck", spec, other, every=2))  # fmt: skip


def test_a_finished_checkpoint_resumes_to_the_same_state(tmp_path):
    data, spec, cfg = _tiny(512)
    first, _ = train(spec, cfg, data, desc="a", progress=False,
                     resumable=_resumable(tmp_path / "ck", spec, cfg, every=3))  # fmt: skip
    again, stats = train(spec, cfg, data, desc="b", progress=False,
                         resumable=_resumable(tmp_path / "ck", spec, cfg, every=3))  # fmt: skip
    assert stats["resumed_at"] == 512 // 64
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(first), jax.device_get(again))
