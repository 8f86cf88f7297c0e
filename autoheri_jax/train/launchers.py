"""The Single and Mesh launchers (parallel.py picks one; Pmap is pmap_launcher.py): a compiled
step plus the state and batch layout it expects, and the way back to the canonical layout."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from autoheri_jax.config import TrainConfig
from autoheri_jax.model.spec import ModelSpec
from autoheri_jax.train.step import TrainState, init_state

AXIS = "data"


@dataclasses.dataclass
class Launcher:
    """One compiled step plus the state / batch layout it expects (the Single layout here)."""

    name: ClassVar[str] = "single"
    devices: list
    step: Any  # (state, batch) -> (state, aux), jitted with the state donated
    specs: Any  # PartitionSpec per state leaf
    abstract: Any  # the state's shapes and dtypes (jax.eval_shape of init_state)
    optimizer: optax.GradientTransformation  # built once, for the step and the initial state

    @property
    def launcher(self) -> str:
        return self.name

    @property
    def num_devices(self) -> int:
        return len(self.devices)

    def init_state(self, spec: ModelSpec, cfg: TrainConfig) -> TrainState:
        return jax.jit(lambda: init_state(spec, cfg, self.optimizer))()

    def abstract_state(self) -> TrainState:
        """Shapes, dtypes and canonical-layout shardings: the target a checkpoint restores to."""
        return jax.tree.map(
            lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=self._placement(s)),
            self.abstract,
            self.specs,
        )

    def _placement(self, leaf_spec: P) -> jax.sharding.Sharding:
        return jax.sharding.make_single_device_sharding(self.devices[0])

    def to_device(self, state: TrainState) -> TrainState:
        """Canonical state -> this launcher's layout."""
        return jax.device_put(state, self.devices[0])

    def from_checkpoint(self, restored: TrainState) -> TrainState:
        """A state restored to `abstract_state()` -> this launcher's layout."""
        return restored

    def canonical(self, state: Any) -> Any:
        """This launcher's layout -> the canonical one (no device axis)."""
        return state

    def host_value(self, x: Any) -> Any:
        """A replicated result (metrics, flags) on the host."""
        return jax.device_get(x)

    def place_batch(self, batch: dict) -> dict:
        """This process's batch -> the step's input layout."""
        return batch


Single = Launcher


@dataclasses.dataclass
class Mesh(Launcher):
    name: ClassVar[str] = "mesh"
    mesh: Any = None

    def _shardings(self) -> Any:
        return jax.tree.map(lambda s: NamedSharding(self.mesh, s), self.specs)

    def init_state(self, spec: ModelSpec, cfg: TrainConfig) -> TrainState:
        # allocated sharded: a big table never sits on one device
        init = lambda: init_state(spec, cfg, self.optimizer)
        return jax.jit(init, out_shardings=self._shardings())()

    def _placement(self, leaf_spec: P) -> jax.sharding.Sharding:
        return NamedSharding(self.mesh, leaf_spec)

    def to_device(self, state: TrainState) -> TrainState:
        return jax.device_put(state, self._shardings())

    def place_batch(self, batch: dict) -> dict:
        sharding = NamedSharding(self.mesh, P(AXIS))
        if jax.process_count() > 1:
            return jax.tree.map(
                lambda x: jax.make_array_from_process_local_data(sharding, x), batch
            )
        return jax.device_put(batch, sharding)
