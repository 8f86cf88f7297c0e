"""Composite checkpoints: bitwise round trips, retention, mismatch errors, crash safety and
restores across device counts (those run in subprocesses: the device count is fixed per
process)."""

import functools
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_trees_equal, child_env, gated, host, tiny_spec, toy_dataset

from autoheri_jax.data.pipeline import StepBatchSource, train_iterator
from autoheri_jax.train.checkpoint import Checkpointer, CheckpointError
from autoheri_jax.train.optim import make_optimizer
from autoheri_jax.train.step import abstract_state, init_keys, init_state
from tests import background

REPO = Path(__file__).resolve().parents[1]
CFG = gated(arch_warmup_steps=0, batch_size=16)


@functools.cache
def _state(seed: int = 1, embed_dim: int = 4):
    """A TrainState with non-trivial values everywhere (moments, counts, key), its abstract."""
    spec = tiny_spec(embed_dim=embed_dim)
    state = init_state(spec, CFG, make_optimizer(CFG))
    leaves, treedef = jax.tree.flatten(state)
    keys = jax.random.split(jax.random.key(seed), len(leaves))

    def perturb(x, k):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):  # the typed run key
            return jax.random.fold_in(x, seed)
        if jnp.issubdtype(x.dtype, jnp.floating):
            return x + jax.random.normal(k, x.shape, x.dtype)
        return x + seed

    noisy = [perturb(x, k) for x, k in zip(leaves, keys, strict=True)]
    return jax.tree.unflatten(treedef, noisy), abstract_state(spec, CFG)


def _assert_same(got, want):
    assert_trees_equal(got, want)  # NamedTuple types included; typed keys by key data


def _run(script: str, *args: str, devices: int = 1, **popen_kw):
    env = child_env(devices)
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(__file__), *sys.path])
    cmd = [sys.executable, "-c", textwrap.dedent(script), *args]
    return subprocess.Popen(cmd, env=env, text=True, **popen_kw)


@pytest.mark.slow
def test_train_state_round_trip_is_bitwise(tmp_path):
    state, abstract = _state()
    extra = {
        "phase": "search",
        "model": "autoheri",
        "architecture": {"kept": ["0.1->1.2"]},
        "config": {"train": {"lr": 2e-3, "hidden": (8, 6, 5)}},
    }
    with Checkpointer(tmp_path, fingerprint={"model": {"embed_dim": 4}}) as ck:
        assert ck.save(40, state, extra=extra, data_state={"next_index": 40})
        assert not ck.save(40, state, extra=extra, force=True)  # already there: no rewrite
        assert not ck.save(30, state, extra=extra)  # behind the latest: skipped
    ck = Checkpointer(tmp_path, fingerprint={"model": {"embed_dim": 4}})
    assert ck.latest_step() == 40
    got, got_extra, data = ck.restore(None, abstract)
    _assert_same(got, state)
    assert type(got).__name__ == "TrainState" and got.rng.dtype == state.rng.dtype
    assert got_extra["phase"] == "search" and got_extra["config"]["train"]["hidden"] == [8, 6, 5]
    assert got_extra["fingerprint"] == {"model": {"embed_dim": 4}}
    assert data == {"next_index": 40}
    with pytest.raises(ValueError, match="reserved"):
        ck.save(50, state, extra={"fingerprint": 1})
    ck.close()


def test_grain_iterator_resumes_at_the_next_batch(tmp_path):
    source = StepBatchSource(toy_dataset(400, with_bags=False), 32, seed=3, num_epochs=2)
    it = train_iterator(source)
    for _ in range(13):  # into the second epoch
        next(it)
    state, abstract = _state()
    with Checkpointer(tmp_path, async_save=False) as ck:
        ck.save(13, state, extra={}, data_state=it.get_state())
    want = next(it)
    _, _, data_state = Checkpointer(tmp_path).restore(13, abstract)
    resumed = train_iterator(
        StepBatchSource(toy_dataset(400, with_bags=False), 32, seed=3, num_epochs=2)
    )
    resumed.set_state(data_state)
    got = next(resumed)
    assert got.keys() == want.keys()
    for key in want:
        np.testing.assert_array_equal(got[key], want[key])


def test_keeps_the_latest_n_and_the_best(tmp_path):
    state = {"w": np.zeros(3, np.float32)}  # retention does not depend on the content
    losses = {10: 0.5, 20: 0.3, 30: 0.9, 40: 0.8, 50: 0.7}
    with Checkpointer(tmp_path, keep=2, async_save=False) as ck:
        for step, loss in losses.items():
            assert ck.save(step, state, extra={}, metrics={"valid_loss": loss})
        ck.wait()
        assert ck.all_steps() == [20, 40, 50] and ck.best_step() == 20
    with Checkpointer(
        tmp_path, keep=2, async_save=False
    ) as ck:  # the metrics are read back from disk
        ck.save(60, state, extra={})  # no metric: kept while among the latest only
        ck.save(70, state, extra={}, metrics={"valid_loss": float("nan")})  # never best
        ck.save(80, state, extra={}, metrics={"valid_loss": 0.1})
        ck.wait()
        assert ck.all_steps() == [70, 80] and ck.best_step() == 80
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.isdigit()) == ["70", "80"]
    with Checkpointer(
        tmp_path / "max", keep=1, best_metric="auc", best_mode="max", async_save=False
    ) as ck:
        for step, auc in [(1, 0.7), (2, 0.9), (3, 0.8), (4, 0.6)]:
            ck.save(step, state, extra={}, metrics={"auc": auc})
        ck.wait()
        assert ck.all_steps() == [2, 4]
    with Checkpointer(tmp_path / "plain", keep=2, keep_best=False, async_save=False) as ck:
        for step in (1, 2, 3):
            ck.save(step, state, extra={}, metrics={"valid_loss": -step})
        ck.wait()
        assert ck.all_steps() == [2, 3]


def test_fingerprint_mismatch_names_each_key(tmp_path):
    state, abstract = _state()
    fp = {"model": {"embed_dim": 4, "hidden": (8, 6, 5)}, "data": "sim"}
    with Checkpointer(tmp_path, fingerprint=fp) as ck:
        ck.save(40, state, extra={})
    other = {"model": {"embed_dim": 8, "hidden": (8, 6, 5)}, "seed": 1}
    with pytest.raises(CheckpointError) as err:
        Checkpointer(tmp_path, fingerprint=other).restore(None, abstract)
    msg = str(err.value)
    assert f"checkpoint in {tmp_path} step 40 was written with" in msg
    assert "model.embed_dim=4, this run has 8" in msg
    assert 'data="sim", this run has "<absent>"' in msg and "seed=" in msg
    assert "hidden" not in msg  # tuples and lists compare equal through JSON
    Checkpointer(tmp_path, fingerprint=fp).restore(40, abstract)  # same fingerprint: fine


def test_structure_mismatch_names_the_path(tmp_path):
    state, abstract = _state()
    with Checkpointer(tmp_path) as ck:
        ck.save(5, state, extra={})
    ck = Checkpointer(tmp_path)
    with pytest.raises(
        CheckpointError,
        match=r"step 5 has state.params.embedding.table as "
        r"float32\[128, 4\], this run expects float32\[128, 8\]",
    ):
        ck.restore(5, _state(embed_dim=8)[1])
    params = {**abstract.params, "extra_group": {"w": jax.ShapeDtypeStruct((2,), jnp.float32)}}
    with pytest.raises(CheckpointError, match=r"has no state.params.extra_group.w"):
        ck.restore(5, abstract._replace(params=params))
    params = {k: v for k, v in abstract.params.items() if k != "arch"}
    with pytest.raises(CheckpointError, match=r"has state.params.arch.edge_logits, which this"):
        ck.restore(5, abstract._replace(params=params))
    bad_dtype = abstract._replace(step=jax.ShapeDtypeStruct((), jnp.float32))
    with pytest.raises(CheckpointError, match=r"state.step as int32\[\], this run expects"):
        ck.restore(5, bad_dtype)
    with pytest.raises(CheckpointError, match=r"no checkpoint for step 6 .* available: \[5\]"):
        ck.restore(6, abstract)


def test_the_train_state_key_is_typed_with_the_legacy_bits():
    """TrainState.rng is a typed key (jax.random.key, threefry2x32), its bits those the
    legacy uint32[2] PRNGKey gave, so runs are bitwise what they were."""
    state = init_state(tiny_spec(), CFG, make_optimizer(CFG))
    for k in (state.rng, abstract_state(tiny_spec(), CFG).rng, *init_keys(5)):
        assert jax.dtypes.issubdtype(k.dtype, jax.dtypes.prng_key), k.dtype
        assert k.shape == () and str(k.dtype) == "key<fry>"
    assert str(jax.random.key_impl(state.rng)) == "threefry2x32"
    legacy = jax.random.split(jax.random.PRNGKey(CFG.seed))  # the raw keys they replace
    np.testing.assert_array_equal(jax.random.key_data(state.rng), legacy[1])
    np.testing.assert_array_equal(jax.random.key_data(init_keys(CFG.seed)[0]), legacy[0])


def test_a_checkpoint_round_trip_keeps_the_key_typed(tmp_path):
    state, abstract = _state(seed=2)
    with Checkpointer(tmp_path) as ck:
        ck.save(3, state, extra={})
    got, _, _ = Checkpointer(tmp_path).restore(3, abstract)
    assert jax.dtypes.issubdtype(got.rng.dtype, jax.dtypes.prng_key)
    assert got.rng.dtype == state.rng.dtype and got.rng.shape == ()
    np.testing.assert_array_equal(host(got.rng), host(state.rng))
    step_key = lambda k: host(jax.random.fold_in(k, 7))  # draws as the saved key does
    np.testing.assert_array_equal(step_key(got.rng), step_key(state.rng))


def test_a_raw_or_foreign_key_in_a_checkpoint_is_refused(tmp_path):
    """A checkpoint from before typed keys (rng saved as raw uint32[2] key data) restores as
    uint32, and one of another key impl has other key data: both are refused by name."""
    state, abstract = _state()
    with Checkpointer(tmp_path / "raw") as ck:
        ck.save(3, state._replace(rng=jax.random.key_data(state.rng)), extra={})
    with pytest.raises(
        CheckpointError,
        match=r"step 3 has state.rng as uint32\[2\], this run "
        r"expects key<fry>\[\]: a raw key, written before .* typed",
    ):
        Checkpointer(tmp_path / "raw").restore_latest(abstract)
    with Checkpointer(tmp_path / "rbg") as ck:
        ck.save(4, state._replace(rng=jax.random.key(0, impl="rbg")), extra={})
    with pytest.raises(
        CheckpointError,
        match=r"step 4 has state.rng as uint32\[4\], this run "
        r"expects uint32\[2\] \(the key data of a key<fry>\[\]\)",
    ):
        Checkpointer(tmp_path / "rbg").restore(4, abstract)


def test_no_checkpoint_is_a_clear_error(tmp_path):
    _, abstract = _state()
    with pytest.raises(CheckpointError, match=f"no checkpoint in {tmp_path / 'empty'}"):
        Checkpointer(tmp_path / "empty").restore(None, abstract)


def test_uncommitted_and_partial_step_directories_are_ignored(tmp_path):
    state, abstract = _state()
    with Checkpointer(tmp_path) as ck:
        ck.save(20, state, extra={"at": 20})
    tmp = tmp_path / "30.orbax-checkpoint-tmp-1234567"  # what an interrupted save leaves
    (tmp / "state").mkdir(parents=True)
    (tmp / "state" / "_METADATA").write_text("{}")
    partial = tmp_path / "40"  # a numbered directory without the commit marker
    (partial / "state").mkdir(parents=True)
    (partial / "extra").write_text("{tru")
    ck = Checkpointer(tmp_path)
    assert ck.latest_step() == 20 and ck.all_steps() == [20]
    assert [p.name for p in ck.quarantined] == ["40.invalid-0"]
    got, extra, _ = ck.restore(None, abstract)
    _assert_same(got, state)
    assert extra["at"] == 20
    assert ck.save(40, state, extra={"at": 40})  # the step number is free again
    ck.close()


def test_failed_background_save_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    """A save that dies after writing every array but before the commit rename."""
    from orbax.checkpoint._src.path import atomicity

    state, abstract = _state()
    with Checkpointer(tmp_path) as ck:
        ck.save(1, state, extra={"at": 1})
    newer, _ = _state(seed=2)

    async def crash(self):
        raise OSError("simulated crash before commit")

    monkeypatch.setattr(atomicity.AtomicRenameTemporaryPath, "finalize", crash)
    ck = Checkpointer(tmp_path)
    ck.save(2, newer, extra={"at": 2})
    with pytest.raises(CheckpointError, match="background save .* failed"):
        ck.wait()
    monkeypatch.undo()
    assert not (tmp_path / "2").exists()
    reopened = Checkpointer(tmp_path)
    assert reopened.latest_step() == 1
    got, extra, _ = reopened.restore(None, abstract)
    _assert_same(got, state)
    assert extra["at"] == 1


KILLED_CHILD = """
    import sys, time
    import jax, numpy as np
    from autoheri_jax.train.checkpoint import Checkpointer
    ck = Checkpointer(sys.argv[1])
    ck.save(1, {"w": np.arange(8, dtype=np.float32)}, extra={"at": 1})
    ck.wait()
    big = jax.random.normal(jax.random.key(0), (20_000_000,))
    ck.save(2, {"w": big}, extra={"at": 2})
    print("in flight", flush=True)
    time.sleep(60)
"""


@pytest.mark.slow
def test_killed_during_async_save_restores_the_previous_step(tmp_path):
    child = _run(KILLED_CHILD, str(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert child.stdout.readline().strip() == "in flight"
        child.send_signal(signal.SIGKILL)  # mid-write: 80 MB take the writer ~0.3 s
    finally:
        child.kill()
        child.wait()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert "2" not in names and any(n.startswith("2.orbax-checkpoint-tmp") for n in names), names
    ck = Checkpointer(tmp_path)
    assert ck.latest_step() == 1
    abstract = {"w": jax.ShapeDtypeStruct((8,), jnp.float32)}
    got, extra, _ = ck.restore(None, abstract)
    np.testing.assert_array_equal(got["w"], np.arange(8, dtype=np.float32))
    assert extra["at"] == 1


EIGHT_DEVICES_CHILD = """
    import sys
    import jax, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from helpers import gated, host, tiny_spec
    from autoheri_jax.train.checkpoint import Checkpointer
    from autoheri_jax.train.step import abstract_state

    src, dst, expected = sys.argv[1:4]
    assert jax.device_count() == 8
    mesh = Mesh(np.array(jax.devices()), ("d",))

    def sharded(x):
        axis = next((i for i, n in enumerate(x.shape) if n % 8 == 0), None)
        spec = P() if axis is None else P(*([None] * axis), "d")
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=NamedSharding(mesh, spec))

    cfg = gated(arch_warmup_steps=0, batch_size=16)
    target = jax.tree.map(sharded, abstract_state(tiny_spec(), cfg))
    state, extra, _ = Checkpointer(src).restore(None, target)
    want = np.load(expected)
    leaves, targets = jax.tree.leaves(state), jax.tree.leaves(target)
    split = 0
    for i, (x, t) in enumerate(zip(leaves, targets, strict=True)):
        assert x.sharding == t.sharding, (i, x.sharding)
        assert x.dtype == t.dtype, (i, x.dtype)  # the typed key restores typed
        np.testing.assert_array_equal(host(x), want[f"arr_{i}"])
        split += len(x.addressable_shards) == 8 and not x.sharding.is_fully_replicated
    assert split > 0
    with Checkpointer(dst, async_save=False) as ck:
        ck.save(extra["at"] + 1, state, extra={"at": extra["at"] + 1})
    print("ok", split, flush=True)
"""


@pytest.mark.slow
def test_restore_across_device_counts(tmp_path):
    """1 device -> 8 devices (NamedSharding target) -> saved sharded -> back onto 1 device."""
    state, abstract = _state(seed=3)
    with Checkpointer(tmp_path / "one") as ck:
        ck.save(7, state, extra={"at": 7})
    expected = tmp_path / "expected.npz"
    np.savez(expected, *[host(x) for x in jax.tree.leaves(state)])
    args = [str(tmp_path / "one"), str(tmp_path / "eight"), str(expected)]
    child = _run(
        EIGHT_DEVICES_CHILD, *args, devices=8, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = child.communicate(timeout=120)
    assert child.returncode == 0 and out.startswith("ok"), err[-3000:]
    meta = json.loads((tmp_path / "eight" / "8" / "state" / "_sharding").read_text())
    assert any("NamedSharding" in json.dumps(v) for v in meta.values())  # really saved sharded
    got, extra, _ = Checkpointer(tmp_path / "eight").restore(None, abstract)
    assert extra["at"] == 8
    _assert_same(got, state)
    assert all(x.sharding.device_set == {jax.devices()[0]} for x in jax.tree.leaves(got))


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@background.job
def two_iterator_processes(tmp: Path) -> tuple[list, Path]:
    """-> ((returncode, stdout, stderr) per process, their checkpoint directory)."""
    env = child_env()  # one CPU device each
    env["JAX_PLATFORMS"] = "cpu"
    worker = str(REPO / "tests" / "iterator_checkpoint_worker.py")
    port, directory = str(_free_port()), tmp / "ckpt"
    procs = [
        background.popen(
            [sys.executable, worker, str(i), "2", port, str(directory)],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    try:
        outputs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            p.kill()  # no-op for a process that ended
    return [(p.returncode, *o) for p, o in zip(procs, outputs, strict=True)], directory


@pytest.mark.slow
@background.uses(two_iterator_processes)  # the processes run as a background job
def test_two_processes_restore_their_own_iterator_positions():
    """2 processes on localhost stop at different batches; each restores its own position."""
    ran, directory = two_iterator_processes.result()
    positions = []
    for i, (code, out, err) in enumerate(ran):
        assert code == 0, out[-2000:] + err[-4000:]
        words = out.strip().splitlines()[-1].split()
        assert words[:2] == ["ok", str(i)], out[-2000:]
        positions.append(int(words[2]))
    assert positions == [3, 5]
    data = directory / "1" / "data"
    files = {n: data / f"process_{n}-of-2.json" for n in range(2)}
    assert all(f.is_file() for f in files.values()), sorted(p.name for p in data.iterdir())
    states = [json.loads(f.read_text()) for f in files.values()]
    assert states[0] != states[1] and [s["next_index"] for s in states] == positions


def test_data_state_none_and_checkpoints_of_the_old_layout(tmp_path):
    """data_state=None round-trips; a checkpoint whose data/ is the older single JSON item is
    refused naming that file and left in place; one with neither file is a CheckpointError
    naming the missing file."""
    import orbax.checkpoint as ocp

    state = {"w": np.arange(4, dtype=np.float32)}
    abstract = {"w": jax.ShapeDtypeStruct((4,), jnp.float32)}
    with Checkpointer(tmp_path / "new", async_save=False) as ck:
        ck.save(1, state, extra={})
        ck.save(2, state, extra={}, data_state={"train": {"next_index": 2}, "valid": None})
    ck = Checkpointer(tmp_path / "new")
    assert ck.restore(1, abstract)[2] is None
    assert ck.restore(2, abstract)[2] == {"train": {"next_index": 2}, "valid": None}
    assert (tmp_path / "new" / "2" / "data" / "process_0-of-1.json").is_file()

    old = tmp_path / "old"  # what the previous Checkpointer wrote
    handlers = {
        "state": ocp.StandardCheckpointHandler(),
        "extra": ocp.JsonCheckpointHandler(),
        "data": ocp.JsonCheckpointHandler(),
    }
    options = ocp.CheckpointManagerOptions(create=True, enable_async_checkpointing=False)
    with ocp.CheckpointManager(old, item_handlers=handlers, options=options) as mgr:
        mgr.save(
            5,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                extra=ocp.args.JsonSave({"at": 5}),
                data=ocp.args.JsonSave({"iterator": {"next_index": 9}}),
            ),
        )
    ck = Checkpointer(old)
    assert not ck.quarantined  # complete, only old: never set aside
    with pytest.raises(
        CheckpointError,
        match=r"step 5 has the older checkpoint layout "
        r"\(.*5/data/metadata.*start the run afresh",
    ):
        ck.restore(5, abstract)
    assert (old / "5" / "data" / "metadata").is_file() and ck.all_steps() == [5]

    (old / "5" / "data" / "metadata").unlink()
    with pytest.raises(
        CheckpointError,
        match=r"step 5 has no data-iterator state .*"
        r"data/process_0-of-1\.json is missing",
    ):
        ck.restore(5, abstract)
    ck.close()
    reopened = Checkpointer(old)  # incomplete now: set aside on open
    assert [p.name for p in reopened.quarantined] == ["5.invalid-0"]
    assert reopened.all_steps() == []
