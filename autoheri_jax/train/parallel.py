"""Data-parallel launchers for the one per-device step in step.py.

  single  jit on one device (the reference).
  mesh    jit over a 1-D device `Mesh` with `jax.shard_map` (the default on several devices:
          since JAX 0.8 `pmap` is in maintenance mode and implemented on top of this).
  pmap    `jax.pmap` over the same step (kept because the design card asks for it and older
          clusters run it); state carries a leading device axis only while it is on device.

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

import dataclasses
from typing import Any

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from autoheri_jax.config import ConfigError, ParallelConfig, TrainConfig
from autoheri_jax.model.spec import ModelSpec
from autoheri_jax.train.optim import make_optimizer
from autoheri_jax.train.step import TrainState, init_state, make_step_fn, make_update_fn

AXIS = "data"


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


@dataclasses.dataclass
class DataParallel:
    """One compiled step plus the state / batch layout it expects."""

    launcher: str
    devices: list
    step: Any
    specs: Any  # PartitionSpec per state leaf
    abstract: Any  # the state's shapes and dtypes (jax.eval_shape of init_state)
    mesh: Any = None

    @property
    def num_devices(self) -> int:
        return len(self.devices)

    def init_state(self, spec: ModelSpec, cfg: TrainConfig) -> TrainState:
        opt = make_optimizer(cfg)
        init = lambda: init_state(spec, cfg, opt)
        if self.launcher == "single":
            return jax.jit(init)()
        if self.launcher == "mesh":  # allocated sharded: a big table never sits on one device
            shardings = jax.tree.map(lambda s: NamedSharding(self.mesh, s), self.specs)
            return jax.jit(init, out_shardings=shardings)()
        return self.to_device(jax.jit(init)())

    def abstract_state(self) -> TrainState:
        """Shapes, dtypes and canonical-layout shardings: the target a checkpoint restores to."""
        if self.launcher == "mesh":
            place = lambda s: NamedSharding(self.mesh, s)
        else:
            place = lambda s: jax.sharding.SingleDeviceSharding(self.devices[0])
        return jax.tree.map(
            lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=place(s)),
            self.abstract,
            self.specs,
        )

    def to_device(self, state: TrainState) -> TrainState:
        """Canonical state -> this launcher's layout."""
        if self.launcher == "single":
            return jax.device_put(state, self.devices[0])
        if self.launcher == "mesh":
            shardings = jax.tree.map(lambda s: NamedSharding(self.mesh, s), self.specs)
            return jax.device_put(state, shardings)
        n = self.num_devices
        lead = NamedSharding(jax.sharding.Mesh(np.asarray(self.devices), (AXIS,)), P(AXIS))

        def stack(x, s):  # a leading device axis: row blocks of a sharded leaf, else copies
            x = np.asarray(x)
            stacked = x.reshape(n, -1, *x.shape[1:]) if s == P(AXIS) else np.stack([x] * n)
            return jax.device_put(stacked, lead)

        return jax.tree.map(stack, state, self.specs)

    def canonical(self, state: Any) -> Any:
        """This launcher's layout -> the canonical one (no device axis)."""
        if self.launcher != "pmap":
            return state
        return jax.tree.map(
            lambda x, s: x.reshape(-1, *x.shape[2:]) if s == P(AXIS) else x[0], state, self.specs
        )

    def host_value(self, x: Any) -> Any:
        """A replicated result (metrics, flags) on the host."""
        x = jax.device_get(x)
        return jax.tree.map(lambda v: v[0], x) if self.launcher == "pmap" else x

    def place_batch(self, batch: dict) -> dict:
        """This process's batch -> the step's input layout."""
        if self.launcher == "single":
            return batch
        if self.launcher == "pmap":
            n = self.num_devices
            return jax.tree.map(lambda x: x.reshape(n, x.shape[0] // n, *x.shape[1:]), batch)
        sharding = NamedSharding(self.mesh, P(AXIS))
        if jax.process_count() > 1:
            return jax.tree.map(
                lambda x: jax.make_array_from_process_local_data(sharding, x), batch
            )
        return jax.device_put(batch, sharding)


def make_data_parallel(spec: ModelSpec, cfg: TrainConfig, pcfg: ParallelConfig) -> DataParallel:
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
        return DataParallel("single", devices[:1], make_update_fn(spec, cfg, opt), specs, abstract)
    step_fn = make_step_fn(spec, cfg, opt, axis=AXIS, shard_embeddings=pcfg.shard_embeddings)
    if launcher == "pmap":
        step = jax.pmap(step_fn, axis_name=AXIS, devices=devices, donate_argnums=0)
        return DataParallel("pmap", devices, step, specs, abstract)
    mesh = jax.sharding.Mesh(np.asarray(devices), (AXIS,))
    sharded = jax.shard_map(
        step_fn, mesh=mesh, in_specs=(specs, P(AXIS)), out_specs=(specs, P()), check_vma=False
    )
    step = jax.jit(sharded, donate_argnums=0)
    return DataParallel("mesh", devices, step, specs, abstract, mesh)
