"""Seeds as a batch dimension: K vmapped seeds equal K separate runs (seed_batch.py, and a
study run with --vmap-seeds, seed_runs.py)."""

import dataclasses
import json
from pathlib import Path

import jax
import numpy as np
import pytest

from autoheri_jax.config import ConfigError
from autoheri_jax.data.simulator import simulate_funnel
from autoheri_jax.train.fit import train_model
from autoheri_jax.train.loop import NonFiniteLossError
from autoheri_jax.train.seed_batch import group_by_spec, train_seeds
from tests import background
from tests.helpers import StopTraining, assert_trees_equal, gated, stop_at, tiny_spec

CFG = gated(
    epochs=1, batch_size=64, lr=1e-2, log_every=4, arch_warmup_steps=3, entropy_warmup_steps=4
)


def _data(seed: int):
    return simulate_funnel(num_rows=640, seed=seed, num_users=40, num_items=60)


def _spec(data):
    from autoheri_jax.config import ModelConfig
    from autoheri_jax.model.build import build_spec

    model = ModelConfig(embed_dim=4, hidden=(8, 6), edge_init="block")
    return build_spec(model, data.vocab_sizes, data.num_dense, data.num_stages, searched=True)


@pytest.mark.slow
def test_vmapped_seeds_equal_separate_runs():
    """Three seeds of a searched model (edges, arch partition, sparse embeddings), each with
    its own data and seed: the vmapped step reproduces every separate run."""
    datas = [_data(s) for s in (0, 1, 2)]
    spec = _spec(datas[0])
    assert all(_spec(d) == spec for d in datas)
    cfgs = [dataclasses.replace(CFG, seed=s) for s in (0, 1, 2)]
    logs = [[] for _ in cfgs]
    on_logs = [lambda s, r, k=k: logs[k].append(r) for k in range(3)]
    batched = train_seeds(spec, cfgs, datas, desc="t", on_logs=on_logs, progress=False)
    for k, (cfg, data) in enumerate(zip(cfgs, datas, strict=True)):
        alone_logs = []
        state, _ = train_model(
            spec,
            cfg,
            data,
            desc="t",
            progress=False,
            on_log=lambda s, r, logs=alone_logs: logs.append(r),
        )
        got, stats = batched[k]
        assert int(got.step) == int(state.step) == 10 and stats["vmapped_seeds"] == 3
        for a, b in zip(jax.tree.leaves(got.params), jax.tree.leaves(state.params), strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-5, atol=2e-6)
        assert_trees_equal(got.rng, state.rng)
        assert [r["step"] for r in logs[k]] == [r["step"] for r in alone_logs]
        np.testing.assert_allclose(
            [r["loss"] for r in logs[k]], [r["loss"] for r in alone_logs], rtol=1e-5
        )
    # the seeds did differ: the test is not comparing one run with itself
    assert not np.allclose(
        batched[0][0].params["arch"]["edge_logits"], batched[1][0].params["arch"]["edge_logits"]
    )


def test_vmapped_seeds_refuse_what_they_cannot_share():
    data = _data(0)
    spec = _spec(data)
    with pytest.raises(ConfigError, match="every TrainConfig field but `seed`"):
        train_seeds(
            spec, [CFG, dataclasses.replace(CFG, lr=0.1)], [data, data], desc="t", progress=False
        )
    with pytest.raises(ConfigError, match="bilevel"):
        bilevel = gated(CFG, bilevel=True)
        train_seeds(spec, [bilevel, bilevel], [data, data], desc="t", progress=False)
    assert group_by_spec([spec, tiny_spec(), spec]) == [[0, 2], [1]]


def test_a_non_finite_seed_is_named():
    data = _data(0)
    spec = _spec(data)
    # only the second seed's labels are NaN: only its loss goes non-finite
    poisoned = dataclasses.replace(data, labels=np.full_like(data.labels, np.nan))
    with pytest.raises(NonFiniteLossError, match=r"seed 1 \(index 1\).*step 0"):
        train_seeds(
            spec,
            [CFG, dataclasses.replace(CFG, seed=1)],
            [data, poisoned],
            desc="t",
            progress=False,
        )


@background.job
def tiny_studies(tmp: Path) -> Path:
    """A 2-seed study of the smoke config run seed by seed (tmp/alone) and with vmapped seeds
    (tmp/vmapped), each by `autoheri study` in its own process."""
    smoke = background.REPO / "experiments" / "configs" / "smoke.py"
    # no validated selection: its batch would train ESMM as a lane (tests/test_lane_reuse.py)
    tiny = [
        "baselines=esmm",
        "data.num_train=1024",
        "checkpoint.every_steps=1000",
        "checkpoint.keep_best=false",
        "checkpoint.async_save=false",
        "edge_search.select=off",
    ]
    file = tmp / "tiny_study.py"
    file.write_text(
        "from autoheri_jax.config import load_config\n"
        "from autoheri_jax.study import Study\n\n\n"
        "def get_study():\n"
        f"    base = load_config({str(smoke)!r}, {tiny!r})\n"
        "    return Study(name='tiny', base=base, arms={'a': []}, seeds=2,\n"
        "                 seed_modes=('data',))\n"
    )
    for flag in ([], ["--vmap-seeds"]):
        wd = tmp / ("vmapped" if flag else "alone")
        background.cli("study", "--config", file, "--workdir", wd, "--no-progress", *flag)
    return tmp


@pytest.mark.slow
@background.uses(tiny_studies)  # the studies run as a background job (tests/background.py)
def test_study_with_vmapped_seeds_equals_seed_by_seed():
    tmp_path = tiny_studies.result()
    results = {}
    for vmapped in (False, True):
        wd = tmp_path / ("vmapped" if vmapped else "alone")
        results[vmapped] = [
            json.loads((wd / "a" / f"dseed{k}" / "results.json").read_text()) for k in range(2)
        ]
    for alone, vmapped in zip(results[False], results[True], strict=True):
        assert vmapped["architecture"]["kept"] == alone["architecture"]["kept"]
        assert vmapped["models"]["esmm"]["train"]["launcher"] == "vmap"
        for model in ("autoheri", "esmm"):
            for key in ("ctr", "cvr", "ctcvr"):
                a, b = (r["models"][model]["test"][key] for r in (alone, vmapped))
                assert b["auc"] == pytest.approx(a["auc"], abs=2e-4), (model, key)
                assert b["nll"] == pytest.approx(a["nll"], rel=1e-4), (model, key)
    run = json.loads((tmp_path / "vmapped" / "a" / "dseed1" / "study_run.json").read_text())
    assert run["vmapped_seeds"] == 2


@pytest.mark.slow
def test_vmapped_seeds_stopped_midway_resume_to_the_same_state(tmp_path):
    """K seeds checkpoint together; a run stopped after step 6 and started again resumes at
    its checkpoint and ends bitwise where an uninterrupted run ends (one train_model() for both)."""
    from autoheri_jax.config import CheckpointConfig
    from autoheri_jax.train.checkpoint_hook import Resumable, seeds_fingerprint

    datas = [_data(s) for s in (0, 1)]
    spec = _spec(datas[0])
    cfgs = [dataclasses.replace(CFG, seed=s, log_every=2) for s in (0, 1)]
    ck = CheckpointConfig(every_steps=2, keep=10, keep_best=False, async_save=False)

    def resumable(path):
        return Resumable(path, ck, {"phase": "t"}, seeds_fingerprint(spec, cfgs))

    whole = train_seeds(spec, cfgs, datas, desc="t", progress=False)

    with pytest.raises(StopTraining):
        train_seeds(
            spec,
            cfgs,
            datas,
            desc="t",
            progress=False,
            on_logs=[stop_at(6), None],
            resumable=resumable(tmp_path / "ck"),
        )
    resumed_at = []
    again = train_seeds(
        spec,
        cfgs,
        datas,
        desc="t",
        progress=False,
        resumable=resumable(tmp_path / "ck"),
        on_resume=resumed_at.append,
    )
    assert resumed_at == [4]  # the last checkpoint before the stop (saves every 2 steps)
    for (a, stats), (b, _) in zip(again, whole, strict=True):
        assert stats["resumed_at"] == 4 and stats["vmapped_seeds"] == 2
        assert_trees_equal(a, b)
    with pytest.raises(Exception, match="seed"):  # another set of seeds is refused, by key
        other = [dataclasses.replace(c, seed=c.seed + 5) for c in cfgs]
        moved = Resumable(tmp_path / "ck", ck, {}, seeds_fingerprint(spec, other))
        train_seeds(spec, other, datas, desc="t", progress=False, resumable=moved)
