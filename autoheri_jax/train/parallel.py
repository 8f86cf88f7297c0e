"""Data-parallel launchers for the step in step.py, one small type each.

  Single  jit of the step on one device (the reference).
  Mesh    the default on several devices, over a 1-D device `Mesh` (axis AXIS):
          - replicated table: `jax.jit` of Single's step with `NamedSharding`s, the state
            replicated and the global batch split along AXIS; XLA's SPMD partitioner inserts
            the gradient all-reduce. One program over the global batch, so it draws Single's
            random numbers (one device key, index 0: the same dropout masks and edge masks).
          - `shard_embeddings`: `jax.shard_map` of the per-device step (named-axis
            collectives, `check_vma=False`), the table and its moments split by rows; each
            device draws its dropout masks from its own device key.
  Pmap    `jax.pmap` of the per-device step (pmap_launcher.py: kept because the design card
          asks for it and older clusters run it; since JAX 0.8 `pmap` is in maintenance mode);
          state carries a leading device axis only while it is on device. Per-device dropout
          keys, as the shard_map mesh.

`make_data_parallel` picks one and builds the optimiser once for it (`Launcher.optimizer`).

Every launcher computes the step `single` computes on the global batch, up to
floating-point summation order, with one exception: with dropout on, the per-device programs
(sharded mesh, pmap) draw each device's masks from its own key (the same distribution, other
draws), where the jit mesh draws Single's. States leave this module in the canonical layout
(no device axis), so checkpoints and evaluation do not care which launcher produced them.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import NamedSharding
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
    """The launcher `pcfg` names (auto: mesh on several devices, else single) with its
    compiled step; ConfigError for a combination it cannot run."""
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
    if launcher == "pmap":
        step_fn = make_step_fn(spec, cfg, opt, axis=AXIS, shard_embeddings=pcfg.shard_embeddings)
        step = jax.pmap(step_fn, axis_name=AXIS, devices=devices, donate_argnums=0)
        return Pmap(devices, step, specs, abstract, opt)
    mesh = jax.sharding.Mesh(np.asarray(devices), (AXIS,))
    if not pcfg.shard_embeddings:
        step = _jit_on_mesh(make_step_fn(spec, cfg, opt), mesh, specs)
        return Mesh(devices, step, specs, abstract, opt, mesh)
    # Row-sparse fetches and updates of a row-sharded table need explicit collectives (each
    # owner contributes its rows), which only a per-device program can say. The step averages
    # gradients itself (`pmean`), hence `check_vma=False`: with the check on, JAX already sums
    # the gradients of replicated parameters and a mean on top would scale them by the
    # device count.
    step_fn = make_step_fn(spec, cfg, opt, axis=AXIS, shard_embeddings=True)
    sharded = jax.shard_map(
        step_fn, mesh=mesh, in_specs=(specs, P(AXIS)), out_specs=(specs, P()), check_vma=False
    )
    return Mesh(devices, jax.jit(sharded, donate_argnums=0), specs, abstract, opt, mesh)


def _jit_on_mesh(step_fn, mesh: jax.sharding.Mesh, specs: Any):
    """`step_fn` (the single-device step of the global batch) jitted over `mesh`: the state
    laid out as `specs` (replicated), the batch split along AXIS, aux replicated; the state is
    donated. Returns (state, batch) -> (state, aux)."""
    state_shardings = jax.tree.map(lambda s: NamedSharding(mesh, s), specs)
    replicated = NamedSharding(mesh, P())

    def traced(state, batch):  # (no `gates` argument: two in_shardings)
        # Traced with the mesh in context, so that code which must stay whole on every device
        # can say so (sparse_embedding.dedupe's row ids; see _whole_on_every_device there).
        with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
            return step_fn(state, batch)

    return jax.jit(
        traced,
        in_shardings=(state_shardings, NamedSharding(mesh, P(AXIS))),
        out_shardings=(state_shardings, replicated),
        donate_argnums=0,
    )
