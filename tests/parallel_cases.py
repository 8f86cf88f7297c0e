"""Multi-device checks, run by test_parallel.py in a subprocess with 8 simulated CPU devices.

`python tests/parallel_cases.py CASE` exits 0 when the case holds; the device count of a JAX
process is fixed at start-up, so these cannot share the main test process.
"""

from __future__ import annotations

import dataclasses
import os
import sys

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import jax
import numpy as np
from helpers import gated, parallel_setup, use_test_compilation_cache

from autoheri_jax.config import ModelConfig, ParallelConfig
from autoheri_jax.model.build import build_spec
from autoheri_jax.train.fit import train_model

# Why a tolerance and not bitwise equality: 8 devices sum the same gradient terms in another
# order (per-device means, then a cross-device mean) than one device does, and float32
# addition is not associative. Adam divides by the root of the second moment, which magnifies
# relative rounding where a gradient is tiny; after 12 steps at lr 1e-2 we saw at most 3.4e-6
# absolute (one embedding entry of 76,800). ATOL = 1e-5 is a tenth of one step's update.
RTOL, ATOL = 2e-5, 1e-5


_setup = parallel_setup  # (data, spec, cfg): 12 batches of a small funnel, the search


def _train(data, spec, cfg, **parallel):
    state, stats = train_model(
        spec, cfg, data, desc="p", progress=False, parallel=ParallelConfig(**parallel)
    )
    assert (
        stats["launcher"] == parallel.get("launcher", "auto") or parallel.get("launcher") == "auto"
    )
    return jax.device_get(state.params), stats


def _close(a, b, what):
    def one(path, x, y):
        np.testing.assert_allclose(
            x, y, rtol=RTOL, atol=ATOL, err_msg=f"{what} {jax.tree_util.keystr(path)}"
        )

    jax.tree_util.tree_map_with_path(one, a, b)


def case_launchers_equal_single_device():
    for sparse in (True, False):
        data, spec, cfg = _setup(sparse)
        ref, _ = _train(data, spec, cfg, launcher="single")
        for launcher in ("mesh", "pmap"):
            got, stats = _train(data, spec, cfg, launcher=launcher)
            assert stats["devices"] == 8, stats
            _close(got, ref, f"{launcher} sparse={sparse}")


def case_mesh_draws_the_single_device_dropout():
    """The mesh launcher jits the single-device step of the global batch, so it draws Single's
    dropout masks (one key, masks over the whole batch; sharding does not change the bits:
    jax_threefry_partitionable) and equals Single with dropout on. Per-device programs (pmap,
    and the mesh's former shard_map path) fold the device index into each device's key and
    draw other masks: that they differ shows the check can fail."""
    data, spec, cfg = _setup(True)
    spec = spec.with_model(dropout=0.3)
    ref, _ = _train(data, spec, cfg, launcher="single")
    got, _ = _train(data, spec, cfg, launcher="mesh")
    _close(got, ref, "mesh dropout")
    other, _ = _train(data, spec, cfg, launcher="pmap")
    worst = max(
        float(np.max(np.abs(a - b)))
        for a, b in zip(jax.tree.leaves(other), jax.tree.leaves(ref), strict=True)
    )
    assert worst > 100 * ATOL, worst


def case_mesh_step_is_one_partitioned_program():
    """Without shard_embeddings the mesh step is jit over NamedShardings (no shard_map: XLA
    inserts the collectives), its state stays replicated, and no collective moves a
    table-sized array (the batch's row ids are gathered, not the [V] dedupe scratch
    reduced). With shard_embeddings it is the shard_map program, its table split by rows."""
    import re

    from autoheri_jax.train.parallel import make_data_parallel

    data, spec, cfg = _setup(True)
    host_batch = data.batch(np.arange(cfg.batch_size))
    for shard in (False, True):
        dp = make_data_parallel(spec, cfg, ParallelConfig(launcher="mesh", shard_embeddings=shard))
        state = dp.init_state(spec, cfg)
        batch = dp.place_batch(host_batch)
        lowered = dp.step.lower(state, batch)
        text = lowered.as_text()  # shard_map lowers to a manual computation (Shardy, GSPMD)
        assert any(k in text for k in ("manual_computation", "SPMDFullToShardShape")) == shard
        if shard:
            continue
        compiled = lowered.compile().as_text()
        assert "all-reduce" in compiled  # the gradient mean, inserted by the partitioner
        for line in compiled.splitlines():
            op = re.search(r"= (.*?) (all-reduce|all-gather|reduce-scatter|all-to-all)\b", line)
            shapes = re.findall(r"\[([\d,]*)\]", op.group(1)) if op else []
            dims = {int(d) for shape in shapes for d in shape.split(",") if d}
            assert spec.table_rows not in dims, line[:300]
        state, _ = dp.step(state, batch)
        for leaf in jax.tree.leaves(state):
            assert leaf.sharding.is_fully_replicated, leaf.sharding
            assert leaf.sharding.spec == jax.sharding.PartitionSpec(), leaf.sharding


def case_sharded_tables_equal_replicated():
    data, spec, cfg = _setup(True)
    ref, _ = _train(data, spec, cfg, launcher="single")
    for launcher in ("mesh", "pmap"):
        got, _ = _train(data, spec, cfg, launcher=launcher, shard_embeddings=True)
        _close(got, ref, f"{launcher} sharded")


def case_sharded_state_is_split_across_devices():
    from autoheri_jax.train.optim import make_optimizer
    from autoheri_jax.train.parallel import make_data_parallel

    _, spec, cfg = _setup(True)
    dp = make_data_parallel(spec, cfg, ParallelConfig(launcher="mesh", shard_embeddings=True))
    state = dp.init_state(spec, cfg)
    table = state.params["embedding"]["table"]
    shard_rows = {s.data.shape[0] for s in table.addressable_shards}
    assert shard_rows == {spec.table_rows // 8}, shard_rows
    assert make_optimizer(cfg) is not None


def case_eight_device_runs_are_bitwise_reproducible():
    data, spec, cfg = _setup(True)
    a, _ = _train(data, spec, cfg, launcher="mesh", shard_embeddings=True)
    b, _ = _train(data, spec, cfg, launcher="mesh", shard_embeddings=True)
    jax.tree.map(np.testing.assert_array_equal, a, b)


def case_bag_slots_on_devices_equal_the_padded_single_device():
    """train.bag_slots under mesh / pmap (sharded too): under pmap and the shard_map mesh
    (shard_embeddings) each device compacts its own bags and the devices agree on the branch
    (a pmin of the fit); the jit mesh compacts the global batch as Single does. Either way
    results follow one device."""
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from tests.helpers import toy_dataset

    data = toy_dataset(128 * 12)
    spec = build_spec(
        ModelConfig(embed_dim=4, hidden=(16, 8)),
        data.vocab_sizes,
        2,
        2,
        data.bag_vocab_sizes,
        searched=True,
    )
    cfg = gated(epochs=1, batch_size=128, arch_warmup_steps=0, lr=1e-2, arch_lr=5e-2, log_every=4)
    ref, _ = _train(data, spec, cfg, launcher="single")
    slots = dataclasses.replace(cfg, bag_slots=0.75)
    got, _ = _train(data, spec, slots, launcher="single")
    _close(got, ref, "single bag_slots")
    for launcher in ("mesh", "pmap"):
        for shard in (False, True):
            got, _ = _train(data, spec, slots, launcher=launcher, shard_embeddings=shard)
            _close(got, ref, f"{launcher} bag_slots shard={shard}")


if __name__ == "__main__":
    use_test_compilation_cache()  # the cases train the same programs more than once
    assert len(jax.devices()) == 8, jax.devices()
    for name in sys.argv[1:]:
        print("running", name, flush=True)
        globals()[f"case_{name}"]()
        print("ok", name, flush=True)
