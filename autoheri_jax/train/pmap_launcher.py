"""The `jax.pmap` launcher, kept because the design card asks for it and older clusters run
it (since JAX 0.8 `pmap` is in maintenance mode; the Mesh launcher is the default).

The state carries a leading device axis only while it is on device: a row-sharded leaf (the
table, with parallel.shard_embeddings) is split into row blocks along it, every other leaf is
copied; `canonical` undoes that, so checkpoints and evaluation never see the device axis.
"""

from __future__ import annotations

from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from autoheri_jax.config import TrainConfig
from autoheri_jax.model.spec import ModelSpec
from autoheri_jax.train.launchers import AXIS, Launcher
from autoheri_jax.train.step import TrainState, init_state


class Pmap(Launcher):
    """The step under `jax.pmap` over the launcher's devices: state and batch carry a
    leading device axis on device (n = num_devices), never in `canonical` form."""

    name: ClassVar[str] = "pmap"
    spreads_batches: ClassVar[bool] = True

    def init_state(self, spec: ModelSpec, cfg: TrainConfig) -> TrainState:
        return self.to_device(jax.jit(lambda: init_state(spec, cfg, self.optimizer))())

    def to_device(self, state: TrainState) -> TrainState:
        """Canonical state -> n x ... leaves: row blocks of a row-sharded leaf (the table),
        copies of every other."""
        n = self.num_devices
        lead = NamedSharding(jax.sharding.Mesh(np.asarray(self.devices), (AXIS,)), P(AXIS))

        def stack(x, s):  # a leading device axis: row blocks of a sharded leaf, else copies
            if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):  # a typed key: no numpy form
                return jax.device_put(jnp.stack([x] * n), lead)
            x = np.asarray(x)
            stacked = x.reshape(n, -1, *x.shape[1:]) if s == P(AXIS) else np.stack([x] * n)
            return jax.device_put(stacked, lead)

        return jax.tree.map(stack, state, self.specs)

    def from_checkpoint(self, restored: TrainState) -> TrainState:
        return self.to_device(restored)

    def canonical(self, state: Any) -> Any:
        """n x ... leaves -> canonical: row blocks joined back, copies read from device 0."""
        return jax.tree.map(
            lambda x, s: x.reshape(-1, *x.shape[2:]) if s == P(AXIS) else x[0], state, self.specs
        )

    def host_value(self, x: Any) -> Any:
        """Device 0's copy of a replicated result, on the host."""
        return jax.tree.map(lambda v: v[0], jax.device_get(x))

    def place_batch(self, batch: dict) -> dict:
        """Every B x ... column -> n x (B / n) x ...: device i gets the i-th block of rows."""
        n = self.num_devices
        return jax.tree.map(lambda x: x.reshape(n, x.shape[0] // n, *x.shape[1:]), batch)
