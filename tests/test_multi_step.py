"""train.steps_per_dispatch (K steps in one jitted lax.scan) and train.device_resident (the
training columns on the device, batches gathered there): both leave the run's result as it
was. Measured on CPU: bitwise equal parameters, log records and checkpoints resumed."""

import dataclasses
import os
import signal
from pathlib import Path

import jax
import numpy as np
import pytest

from autoheri_jax.config import (
    CheckpointConfig,
    Config,
    ConfigError,
    ModelConfig,
    ParallelConfig,
    TrainConfig,
    load_config,
)
from autoheri_jax.data import device_store
from autoheri_jax.data.dataset import BagField
from autoheri_jax.data.pipeline import StepBatchSource
from autoheri_jax.data.simulator import simulate_funnel
from autoheri_jax.model.build import build_spec
from autoheri_jax.train.arch_batch import train_architectures
from autoheri_jax.train.fit import train_model
from autoheri_jax.train.loop import Resumable, fingerprint
from autoheri_jax.train.seed_batch import train_seeds
from autoheri_jax.train.signals import TrainingInterrupted
from tests.helpers import gated, toy_dataset

# 16 steps of batch 64 on `data` (K = 4: four dispatches); dropout, so the step keys matter:
# a key drawn from the wrong step index would change the parameters
REPO = Path(__file__).resolve().parents[1]
CFG = TrainConfig(epochs=1, batch_size=64, lr=1e-2, log_every=4)
MODEL = ModelConfig(embed_dim=4, hidden=(8, 6), dropout=0.2)


@pytest.fixture(scope="module")
def data():
    return simulate_funnel(
        num_rows=1024,
        seed=0,
        num_users=60,
        num_items=80,
        click_rate=0.3,
        stage_rates=(0.3,),
        num_dense=1,
    )


def _spec(data, model=MODEL, searched=False):
    return build_spec(
        model,
        data.vocab_sizes,
        data.num_dense,
        data.num_stages,
        data.bag_vocab_sizes,
        searched=searched,
    )


def _run(spec, cfg, data, **kw):
    records = []
    state, stats = train_model(
        spec, cfg, data, desc="t", progress=False, on_log=lambda s, r: records.append(r), **kw
    )
    strip = lambda r: {k: v for k, v in r.items() if k != "examples_per_s"}
    return jax.device_get(state), [strip(r) for r in records], stats


def _assert_same(a, b):
    jax.tree.map(np.testing.assert_array_equal, a, b)


@pytest.fixture(scope="module")
def reference(data):
    """The K = 1 run on host batches: (state, records, stats)."""
    return _run(_spec(data), CFG, data)


def test_four_steps_per_dispatch_train_what_one_does(data, reference):
    ref, ref_records, ref_stats = reference
    got, records, stats = _run(_spec(data), dataclasses.replace(CFG, steps_per_dispatch=4), data)
    assert stats["steps"] == ref_stats["steps"] == 16
    assert int(got.step) == 16
    _assert_same(got.params, ref.params)  # bitwise on CPU
    _assert_same(got.opt_state, ref.opt_state)
    assert records == ref_records  # the same steps logged, the same values
    assert [r["step"] for r in records] == [4, 8, 12, 16]


def test_device_store_batches_are_the_host_batches():
    """`gather` rebuilds CTRDataset.batch on the device: per-row bags, bags shared through
    row_of (two fields, one mapping), truncated bags and an empty bag table."""
    data = toy_dataset(300)
    rng = np.random.default_rng(1)
    k = 40
    lengths = rng.integers(0, 7, k)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    row_of = rng.integers(0, k, data.num_rows)
    shared = [
        BagField(
            name,
            30,
            offsets[:-1],
            offsets[1:],
            rng.integers(1, 30, offsets[-1]).astype(np.int32),
            rng.random(offsets[-1]).astype(np.float32),
            row_of,
        )
        for name in ("u1", "u2")
    ]
    z = np.zeros(data.num_rows, np.int64)
    empty = BagField("none", 5, z, z, np.zeros(0, np.int32), np.zeros(0, np.float32))
    data = dataclasses.replace(data, bags=(*data.bags, *shared, empty))
    store = device_store.DeviceStore(data, jax.devices()[0])
    gather = jax.jit(store.gather)
    source = StepBatchSource(data, 64, seed=3, num_epochs=2)
    for step in (0, 3, 5):
        idx = device_store.StepIndices(source)[step]["idx"]
        want = data.batch(source.indices(step))
        got = jax.device_get(gather(store.arrays, idx))
        assert sorted(got) == sorted(want)
        for key in want:
            assert got[key].dtype == want[key].dtype, key
            np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def test_device_resident_runs_equal_host_runs():
    """9 steps with a bag field, K = 4: dispatches of 4, 4 and a last single step (the
    store's one-step call), against K = 1 on host batches."""
    data = toy_dataset(9 * 64)
    spec = _spec(data)
    ref, ref_records, _ = _run(spec, CFG, data)
    cfg = dataclasses.replace(CFG, device_resident="auto", steps_per_dispatch=4)
    got, records, _ = _run(spec, cfg, data)
    _assert_same(got.params, ref.params)
    assert records == ref_records
    assert [r["step"] for r in records] == [4, 8, 9]


def _resumable(path, spec, cfg):
    ck = CheckpointConfig(every_steps=4, keep=10, keep_best=False, async_save=False)
    return Resumable(path, ck, {"phase": "t"}, fingerprint(spec, cfg))


def test_a_run_stopped_at_a_dispatch_boundary_resumes_to_the_uninterrupted_result(
    data, reference, tmp_path
):
    """SIGTERM arrives while step 8 is logged: the run saves at 8 (the end of its second
    dispatch) and stops; the rerun restores 8 and ends where the run that never stopped
    ends (the K = 1 reference, which K = 4 equals bitwise), with the same records."""
    spec = _spec(data)
    cfg = dataclasses.replace(CFG, steps_per_dispatch=4, device_resident="on")
    whole, whole_records, _ = reference

    def sigterm_at_8(step, record):
        if step == 8:
            os.kill(os.getpid(), signal.SIGTERM)

    ck = tmp_path / "b"
    with pytest.raises(TrainingInterrupted, match="at step 8"):
        train_model(
            spec,
            cfg,
            data,
            desc="t",
            progress=False,
            on_log=sigterm_at_8,
            resumable=_resumable(ck, spec, cfg),
        )
    resumed, records, stats = _run(spec, cfg, data, resumable=_resumable(ck, spec, cfg))
    assert stats["resumed_at"] == 8
    assert records == whole_records[2:]  # steps 12 and 16
    _assert_same(resumed.params, whole.params)
    _assert_same(resumed.opt_state, whole.opt_state)
    assert int(resumed.step) == int(whole.step) == 16


def test_lane_launchers_take_k_steps_per_dispatch(data):
    spec = _spec(data)
    cfgs = [dataclasses.replace(CFG, seed=s) for s in (0, 1)]
    k4 = [dataclasses.replace(c, steps_per_dispatch=4) for c in cfgs]
    ref = train_seeds(spec, cfgs, [data, data], desc="s", progress=False)
    got = train_seeds(spec, k4, [data, data], desc="s", progress=False)
    for (a, _), (b, _) in zip(ref, got, strict=True):
        _assert_same(jax.device_get(a.params), jax.device_get(b.params))
    arch_spec = _spec(data, dataclasses.replace(MODEL, dropout=0.0))
    masks = np.eye(arch_spec.num_edges, dtype=np.float32)[:2]
    ref, _ = train_architectures(arch_spec, CFG, data, masks, desc="a")
    cfg = dataclasses.replace(CFG, steps_per_dispatch=4, device_resident="on")
    got, _ = train_architectures(arch_spec, cfg, data, masks, desc="a")
    _assert_same(jax.device_get(ref.params), jax.device_get(got.params))


@pytest.mark.parametrize(
    "fields, key",
    [
        ({"steps_per_dispatch": 0}, "steps_per_dispatch"),
        ({"steps_per_dispatch": 4, "log_every": 50}, "log_every"),
        ({"device_resident": "gpu"}, "device_resident"),
        ({"steps_per_dispatch": 2.0}, "steps_per_dispatch"),
    ],
)
def test_bad_values_are_refused_by_name(fields, key):
    with pytest.raises(ConfigError, match=key):
        TrainConfig(**fields)


def test_checkpoint_interval_must_be_a_multiple_of_k(data, tmp_path):
    with pytest.raises(ConfigError, match="checkpoint.every_steps"):
        load_config(
            REPO / "experiments/configs/smoke.py",
            ["retrain.steps_per_dispatch=16", "retrain.log_every=16", "checkpoint.every_steps=40"],
        )
    spec = _spec(data)
    cfg = dataclasses.replace(CFG, steps_per_dispatch=4)
    ck = CheckpointConfig(every_steps=6, keep_best=False)
    with pytest.raises(ConfigError, match="every_steps=6 .* steps_per_dispatch=4"):
        train_model(
            spec,
            cfg,
            data,
            desc="t",
            progress=False,
            resumable=Resumable(tmp_path, ck, {}, fingerprint(spec, cfg)),
        )
    assert isinstance(Config(), Config)  # the defaults (K = 1) pass


def test_unsupported_launchers_refuse_by_name(data):
    spec = _spec(data)
    mesh = ParallelConfig(launcher="mesh", num_devices=1)
    with pytest.raises(ConfigError, match="steps_per_dispatch=4.*mesh launcher"):
        train_model(
            spec,
            dataclasses.replace(CFG, steps_per_dispatch=4),
            data,
            desc="t",
            progress=False,
            parallel=mesh,
        )
    with pytest.raises(ConfigError, match="device_resident=on.*mesh launcher"):
        train_model(
            spec,
            dataclasses.replace(CFG, device_resident="on"),
            data,
            desc="t",
            progress=False,
            parallel=mesh,
        )
    on = dataclasses.replace(CFG, device_resident="on")
    with pytest.raises(ConfigError, match="device_resident=on.*vmapped seeds"):
        train_seeds(
            spec, [on, dataclasses.replace(on, seed=1)], [data, data], desc="s", progress=False
        )


def test_a_bilevel_search_takes_its_validation_batches_per_step(data):
    """The bi-level search's validation batches are stacked beside the training indices (the
    store on) and each scanned step takes its own: K = 4 equals K = 1, arch logits included."""
    train_rows, valid_rows = data.split([768, 256])
    spec = _spec(data, dataclasses.replace(MODEL, edge_mode="hierarchical"), searched=True)
    cfg = gated(epochs=1, batch_size=64, lr=1e-2, log_every=4, arch_warmup_steps=0, bilevel=True)
    ref, ref_records, _ = _run(spec, cfg, train_rows, valid=valid_rows)
    k4 = dataclasses.replace(cfg, steps_per_dispatch=4, device_resident="on")
    got, records, _ = _run(spec, k4, train_rows, valid=valid_rows)
    _assert_same(got.params, ref.params)
    assert records == ref_records and "valid_loss" in records[-1]
