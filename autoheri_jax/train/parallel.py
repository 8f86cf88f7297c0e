"""Data-parallel launchers for the one per-device step in step.py, one small type each.

  Single  jit on one device (the reference).
  Mesh    jit over a 1-D device `Mesh` with `jax.shard_map` (the default on several devices:
          since JAX 0.8 `pmap` is in maintenance mode and implemented on top of this).
  Pmap    `jax.pmap` over the same step (pmap_launcher.py: kept because the design card asks
          for it and older clusters run it); state carries a leading device axis only while
          it is on device.

`make_data_parallel` picks one and builds the optimiser once for it (`Launcher.optimizer`).

The step averages gradients itself (`pmean`), so shard_map runs with `check_vma=False`: with
the check on, JAX already sums the gradients of replicated parameters, and a pmean on top of
that would scale them by the device count. Both launchers compute the same function as
`single` on the global batch; they differ from it only in floating-point summation order.

With `shard_embeddings`, the table (and its optimiser moments) is split along rows across the
devices instead of replicated; the step fetches and updates rows through collectives.
States leave this module in the canonical layout (no device axis), so checkpoints and
evaluation do not care which launcher produced them.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import PartitionSpec as P

from autoheri_jax.config import ConfigError, ParallelConfig, TrainConfig
from autoheri_jax.model.spec import ModelSpec
from autoheri_jax.train.launchers import AXIS, Launcher, Mesh, Single
from autoheri_jax.train.optim import make_optimizer
from autoheri_jax.train.pmap_launcher import Pmap
from autoheri_jax.train.step import init_state, make_step_fn, make_update_fn


def init_distributed(cfg: ParallelConfig) -> None:
    """Joins a multi-process run when the config (or the environment) names a coordinator."""
    if cfg.num_processes <= 1:
        return
    if cfg.cpu_collectives:
        jax.config.update("jax_cpu_collectives_implementation", cfg.cpu_collectives)
    jax.distributed.initialize(
        coordinator_address=cfg.coordinator or None,
        num_processes=cfg.num_processes,
        process_id=cfg.process_id if cfg.process_id >= 0 else None,
    )


def _is_table(path) -> bool:
    keys = [getattr(k, "key", None) for k in path]
    return "embedding" in keys and "table" in keys


def state_specs(state: Any, shard_embeddings: bool) -> Any:
    """PartitionSpec per state leaf: the table and its moments sharded by row if asked."""

    def spec(path, leaf):
        if shard_embeddings and _is_table(path) and getattr(leaf, "ndim", 0) == 2:
            return P(AXIS)
        return P()

    return jax.tree_util.tree_map_with_path(spec, state)


DataParallel = Launcher  # the name this module's callers and tests know


def make_data_parallel(spec: ModelSpec, cfg: TrainConfig, pcfg: ParallelConfig) -> Launcher:
    devices = jax.devices() if pcfg.launcher != "pmap" else jax.local_devices()
    if pcfg.num_devices:
        if pcfg.num_devices > len(devices):
            raise ConfigError(
                f"parallel.num_devices={pcfg.num_devices} but only {len(devices)} devices exist"
            )
        devices = devices[: pcfg.num_devices]
    launcher = pcfg.launcher
    if launcher == "auto":
        launcher = "mesh" if len(devices) > 1 else "single"
    if launcher == "single" and pcfg.shard_embeddings:
        raise ConfigError("parallel.shard_embeddings needs the mesh or pmap launcher")
    if pcfg.shard_embeddings and not cfg.sparse_embeddings:
        raise ConfigError("parallel.shard_embeddings needs sparse_embeddings=true")
    per_launch = cfg.batch_size // jax.process_count() if launcher == "pmap" else cfg.batch_size
    if per_launch % len(devices):
        raise ConfigError(f"batch_size {cfg.batch_size} is not divisible by {len(devices)} devices")
    opt = make_optimizer(cfg)
    abstract = jax.eval_shape(lambda: init_state(spec, cfg, opt))
    specs = state_specs(abstract, pcfg.shard_embeddings)
    if launcher == "single":
        return Single(devices[:1], make_update_fn(spec, cfg, opt), specs, abstract, opt)
    step_fn = make_step_fn(spec, cfg, opt, axis=AXIS, shard_embeddings=pcfg.shard_embeddings)
    if launcher == "pmap":
        step = jax.pmap(step_fn, axis_name=AXIS, devices=devices, donate_argnums=0)
        return Pmap(devices, step, specs, abstract, opt)
    mesh = jax.sharding.Mesh(np.asarray(devices), (AXIS,))
    sharded = jax.shard_map(
        step_fn, mesh=mesh, in_specs=(specs, P(AXIS)), out_specs=(specs, P()), check_vma=False
    )
    step = jax.jit(sharded, donate_argnums=0)
    return Mesh(devices, step, specs, abstract, opt, mesh)
