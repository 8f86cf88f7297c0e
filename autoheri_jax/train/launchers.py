"""The Single and Mesh launchers (parallel.py picks one; Pmap is pmap_launcher.py; the lane
launchers are lanes.py): a compiled step plus the state and batch layout it expects, the way
back to the canonical layout, and what differs per launcher in `loop.train`: its step source,
its log records and its non-finite check (naming the lane where there are lanes)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar

import jax
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from autoheri_jax.config import TrainConfig
from autoheri_jax.data.dataset import CTRDataset
from autoheri_jax.data.pipeline import StepBatchSource
from autoheri_jax.model.spec import ModelSpec
from autoheri_jax.train.step import TrainState, init_state, make_step_fn

AXIS = "data"
_SYNC_EVERY = 4  # steps between host syncs on several CPU devices


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or inf; the message names the phase and step."""


def log_record(
    step: int, epoch: int, aux: dict, examples_per_s: float, valid_loss: bool = False
) -> dict:
    """One log point of one model (host values): the record metrics.jsonl and on_log see."""
    return {
        "step": step,
        "epoch": epoch,
        "loss": float(aux["loss"]),
        "stage_bce": [float(x) for x in aux["stage_bce"]],
        "entropy": float(aux["entropy"]),
        **({"valid_loss": float(aux["valid_loss"])} if valid_loss else {}),
        "edge_probs": [float(p) for p in aux["edge_probs"]],
        "examples_per_s": examples_per_s,
    }


@dataclasses.dataclass
class Launcher:
    """One compiled step plus the state / batch layout it expects (the Single layout here)."""

    name: ClassVar[str] = "single"
    spreads_batches: ClassVar[bool] = False  # each batch split across devices (mesh, pmap)
    lane_kind: ClassVar[str] = ""  # the stats key that counts the lanes (lanes.py)
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

    @property
    def lanes(self) -> int:
        """Runs trained side by side in one step (lanes.py); 0: one model."""
        return 0

    @property
    def gates(self) -> np.ndarray | None:
        """Per lane edge masks [A, E] when the lanes are architectures."""
        return None

    @property
    def sync_every(self) -> int:
        """Steps between forced host syncs; 0: the loop never forces one."""
        # Simulated CPU devices can deadlock in all-reduce with many steps in flight
        # (accelerators keep their steps overlapping), so the host syncs every few steps there.
        return _SYNC_EVERY if self.num_devices > 1 and self.devices[0].platform == "cpu" else 0

    def batch_source(self, cfg: TrainConfig, data: CTRDataset):
        """The step -> batch source of a run: this process's slice of `data`'s permutation."""
        shard = {"process_index": jax.process_index(), "process_count": jax.process_count()}
        return StepBatchSource(
            data, cfg.batch_size, cfg.seed, cfg.epochs, **shard, max_steps=cfg.max_steps
        )

    def init_state(self, spec: ModelSpec, cfg: TrainConfig) -> TrainState:
        """A fresh TrainState of `spec` (weights from cfg.seed) in this launcher's layout."""
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

    def step_function(self, spec: ModelSpec, cfg: TrainConfig) -> Callable | None:
        """The per-step function, unjitted, that K steps per dispatch and the device store
        run inside one jitted call; None: this launcher runs one step per host batch."""
        return None if self.spreads_batches else make_step_fn(spec, cfg, self.optimizer)

    def device_store_refusal(self) -> str:
        """Why the device store (data/device_store.py) cannot feed this launcher; "": it can."""
        if self.spreads_batches:
            return f"the {self.launcher} launcher places each batch across devices"
        return ""

    def raise_if_non_finite(self, state: TrainState, desc: str, epoch: int) -> None:
        """NonFiniteLossError naming the first step whose loss was NaN or inf, if one was."""
        bad = int(self.host_value(state.first_bad_step))
        if bad >= 0:
            raise NonFiniteLossError(
                f"{desc}: non-finite loss at step {bad} (epoch {epoch}); that step's update "
                "was dropped, the run stopped, and the last checkpoint before it is intact"
            )

    def log_records(
        self, step: int, epoch: int, aux: dict, rate: float, valid_loss: bool
    ) -> list[dict]:
        """One log record per model (host `aux`)."""
        return [log_record(step, epoch, aux, rate, valid_loss)]

    def progress_fields(self, aux: dict) -> dict:
        """What the progress bar shows beside the step count."""
        return {"loss": float(aux["loss"]), "entropy": float(aux["entropy"])}


Single = Launcher


@dataclasses.dataclass
class Mesh(Launcher):
    """The step over a 1-D device mesh (parallel.py builds it): the state laid out as `specs`
    (replicated, or the table split by rows), each batch split along AXIS."""

    name: ClassVar[str] = "mesh"
    spreads_batches: ClassVar[bool] = True
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
        """Each process's B_p x ... columns -> one global array per column, rows split across
        the mesh along AXIS."""
        sharding = NamedSharding(self.mesh, P(AXIS))
        if jax.process_count() > 1:
            return jax.tree.map(
                lambda x: jax.make_array_from_process_local_data(sharding, x), batch
            )
        return jax.device_put(batch, sharding)
