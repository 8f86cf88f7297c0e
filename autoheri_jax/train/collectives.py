"""Named-axis collectives that are identities on one device (`axis=None`).

The training step is written once per device; these let the same code run with `axis=None`
under `jit` (one device, or the mesh launcher's partitioned global batch) and per device under
`shard_map` (row-sharded tables) or `pmap` (parallel.py).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp


def pmean(x: Any, axis: str | None) -> Any:
    return x if axis is None else jax.lax.pmean(x, axis)


def all_gather(x: jax.Array, axis: str | None) -> jax.Array:
    return x if axis is None else jax.lax.all_gather(x, axis, tiled=True)


def num_devices(axis: str | None) -> int:
    return 1 if axis is None else jax.lax.axis_size(axis)


def device_index(axis: str | None) -> jax.Array:
    return jnp.zeros((), jnp.int32) if axis is None else jax.lax.axis_index(axis)
