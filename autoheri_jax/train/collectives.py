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
    """Mean of the pytree `x` over the devices of `axis`; `x` itself when axis is None."""
    return x if axis is None else jax.lax.pmean(x, axis)


def all_gather(x: jax.Array, axis: str | None) -> jax.Array:
    """Every device's `x` concatenated along axis 0 (tiled: N x n rows from n each); `x`
    itself when axis is None."""
    return x if axis is None else jax.lax.all_gather(x, axis, tiled=True)


def num_devices(axis: str | None) -> int:
    """Number of devices along `axis` (1 when None)."""
    return 1 if axis is None else jax.lax.axis_size(axis)


def device_index(axis: str | None) -> jax.Array:
    """This device's int32 scalar index along `axis` (0 when None)."""
    return jnp.zeros((), jnp.int32) if axis is None else jax.lax.axis_index(axis)
