"""Lanes: runs of one spec trained side by side in one jitted step (`jax.vmap` over a leading
lane axis of the state), as launchers of `loop.train`.

  SeedLanes   K runs that differ only in TrainConfig.seed (and maybe their data), each lane
              its own batch (seed_batch.train_seeds).
  ArchLanes   A fixed architectures of one unsearched spec: one initial state copied A times,
              one edge mask per lane, one batch shared by every lane (arch_batch.py).

Both are launchers of `loop.train`, so a lane batch gets the single run's log records,
non-finite check (naming the lane), checkpoints (lane-leading), signal handling and resume.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from autoheri_jax.config import ConfigError, TrainConfig, edge_keep_prob, is_bilevel
from autoheri_jax.data.dataset import CTRDataset
from autoheri_jax.data.pipeline import StepBatchSource
from autoheri_jax.model.spec import ModelSpec
from autoheri_jax.train.launchers import Launcher, NonFiniteLossError, log_record
from autoheri_jax.train.optim import make_optimizer
from autoheri_jax.train.step import TrainState, init_state, make_lane_step


def raise_if_a_lane_went_bad(first_bad: np.ndarray, lane_names: Sequence[str], desc: str):
    """Stops a vmapped run at the first lane whose loss went non-finite, naming it and the step."""
    bad = np.asarray(first_bad)
    if (bad >= 0).any():
        k = int(np.flatnonzero(bad >= 0)[0])
        raise NonFiniteLossError(
            f"{desc}: {lane_names[k]} had a non-finite loss at step {int(bad[k])}; "
            "that step's update was dropped and the run stopped"
        )


class LaneLauncher(Launcher):
    """What seed and architecture lanes share as launchers of loop.train: a lane-leading
    state on one device, one log record per lane, the non-finite check naming the lane."""

    def step_function(self, spec: ModelSpec, cfg: TrainConfig) -> Callable:
        return make_lane_step(spec, cfg, self.optimizer)

    def raise_if_non_finite(self, state: TrainState, desc: str, epoch: int) -> None:
        raise_if_a_lane_went_bad(self.host_value(state.first_bad_step), self.lane_names, desc)

    def log_records(
        self, step: int, epoch: int, aux: dict, rate: float, valid_loss: bool
    ) -> list[dict]:
        return [log_record(step, epoch, unstack_tree(aux, k), rate) for k in range(self.lanes)]

    def progress_fields(self, aux: dict) -> dict:
        return {"loss": float(np.mean(aux["loss"]))}


# ------------------------------------------------------------------------------ seed lanes


class StackedSource:
    """Step -> every lane's batch of that step, stacked along a new leading axis (K x B ...)."""

    def __init__(self, sources: Sequence[StepBatchSource]):
        lengths = {len(s) for s in sources}
        if len(lengths) != 1:
            raise ConfigError(f"seeds disagree on the number of steps: {sorted(lengths)}")
        self.sources = list(sources)

    def __len__(self) -> int:
        return len(self.sources[0])

    @property
    def steps_per_epoch(self) -> int:
        return self.sources[0].steps_per_epoch

    def __getitem__(self, step: int) -> dict[str, np.ndarray]:
        batches = [s[step] for s in self.sources]
        return {k: np.stack([b[k] for b in batches]) for k in batches[0]}


def stack_trees(trees: Sequence) -> object:
    """K pytrees of one structure -> one pytree whose leaves have a new leading axis of K."""
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def unstack_tree(tree, k: int) -> object:
    """Lane `k` of a lane-leading pytree (every leaf indexed [k])."""
    return jax.tree.map(lambda x: x[k], tree)


def check_seed_lanes(cfgs: Sequence[TrainConfig]) -> None:
    """ConfigError unless the configs differ only in `seed` and none runs the bi-level
    search (lanes of one step share everything else)."""
    base = dataclasses.replace(cfgs[0], seed=0)
    for c in cfgs[1:]:
        if dataclasses.replace(c, seed=0) != base:
            raise ConfigError("vmapped seeds must share every TrainConfig field but `seed`")
    if is_bilevel(cfgs[0]):
        raise ConfigError("vmapped seeds do not support edge_search.bilevel; run seeds one by one")


def make_seed_step(spec: ModelSpec, cfg: TrainConfig, optimizer=None) -> Callable:
    """The jitted K-seed step: (stacked state, K x B batch) -> (stacked state, stacked aux)."""
    optimizer = make_optimizer(cfg) if optimizer is None else optimizer
    return jax.jit(make_lane_step(spec, cfg, optimizer), donate_argnums=0)


@dataclasses.dataclass
class SeedLanes(LaneLauncher):
    """K seeds of one spec on one device, as a launcher of loop.train: the state and every
    batch carry a leading seed axis, and so do checkpoints (a vmapped run resumes whole)."""

    name: ClassVar[str] = "vmap"
    lane_kind: ClassVar[str] = "vmapped_seeds"
    cfgs: tuple[TrainConfig, ...] = ()
    datas: tuple[CTRDataset, ...] = ()  # lane k reads datas[k] in cfgs[k].seed's order

    @property
    def lanes(self) -> int:
        return len(self.cfgs)

    def device_store_refusal(self) -> str:
        return "vmapped seeds read one dataset per lane"

    @property
    def lane_names(self) -> list[str]:
        return [f"seed {c.seed} (index {k})" for k, c in enumerate(self.cfgs)]

    def batch_source(self, cfg: TrainConfig, data: CTRDataset | None) -> StackedSource:
        """Every lane's own source (its seed, its data), stacked per step; `data` is unused."""
        return StackedSource(
            [
                StepBatchSource(d, c.batch_size, c.seed, c.epochs, max_steps=c.max_steps)
                for c, d in zip(self.cfgs, self.datas, strict=True)
            ]
        )

    def init_state(self, spec: ModelSpec, cfg: TrainConfig) -> TrainState:
        """K fresh states, lane k's from cfgs[k].seed, stacked along a leading K axis."""
        return stack_trees([init_state(spec, c, self.optimizer) for c in self.cfgs])


def seed_lanes(
    spec: ModelSpec, cfgs: Sequence[TrainConfig], datas: Sequence[CTRDataset]
) -> SeedLanes:
    """The SeedLanes launcher of K = len(cfgs) seeds of `spec` (lane k reads datas[k]), with
    its jitted step and its K-leading abstract state; ConfigError as `check_seed_lanes`."""
    check_seed_lanes(cfgs)
    opt = make_optimizer(cfgs[0])
    abstract = jax.eval_shape(lambda: stack_trees([init_state(spec, c, opt) for c in cfgs]))
    specs = jax.tree.map(lambda _: P(), abstract)
    step = make_seed_step(spec, cfgs[0], opt)
    return SeedLanes(jax.devices()[:1], step, specs, abstract, opt, tuple(cfgs), tuple(datas))


# ------------------------------------------------------------------------------ arch lanes


@dataclasses.dataclass
class ArchLanes(LaneLauncher):
    """A edge masks of one unsearched spec on one device, as a launcher of loop.train: every
    lane starts from the same weights and sees the same batches (common random numbers)."""

    name: ClassVar[str] = "vmap-arch"
    lane_kind: ClassVar[str] = "architectures"
    masks: np.ndarray | None = None  # A x E, 0/1

    @property
    def lanes(self) -> int:
        return len(self.masks)

    @property
    def gates(self) -> np.ndarray:
        return self.masks

    def step_function(self, spec: ModelSpec, cfg: TrainConfig) -> Callable:
        """(A-leading state, one shared batch) -> (state, A-leading aux), lane a gated by
        masks[a]; unjitted."""
        gates = jnp.asarray(self.masks)
        inner = make_lane_step(spec, cfg, self.optimizer, batch_axis=None, gates_axis=0)
        return lambda state, batch: inner(state, batch, gates)

    @property
    def lane_names(self) -> list[str]:
        return [f"architecture {a}" for a in range(len(self.masks))]

    def init_state(self, spec: ModelSpec, cfg: TrainConfig) -> TrainState:
        """One fresh state from cfg.seed, copied into every one of the A lanes."""
        one = init_state(spec, cfg, self.optimizer)  # eager, as the batch always was
        return jax.tree.map(lambda x: jnp.broadcast_to(x, (len(self.masks), *x.shape)).copy(), one)


def check_arch_lanes(spec: ModelSpec, cfg: TrainConfig, masks: np.ndarray) -> None:
    """ConfigError unless `spec` is unsearched, `cfg` runs no bi-level search and no sampled
    masks, and `masks` is A x E with A >= 1."""
    if spec.has_arch:
        raise ConfigError("an architecture batch trains fixed masks: the spec must be unsearched")
    if is_bilevel(cfg) or edge_keep_prob(cfg) > 0:
        raise ConfigError("an architecture batch takes no bilevel search and no sampled masks")
    if masks.ndim != 2 or masks.shape[1] != spec.num_edges or not len(masks):
        raise ConfigError(f"masks must be A x {spec.num_edges} (A >= 1), got {masks.shape}")


def arch_lanes(spec: ModelSpec, cfg: TrainConfig, masks: np.ndarray) -> ArchLanes:
    """The ArchLanes launcher of `masks` [A, E] (0/1, cast to float32) on `spec`, with its
    jitted step (every lane the same batch, lane a gated by masks[a]) and its A-leading
    abstract state; ConfigError as `check_arch_lanes`."""
    masks = np.asarray(masks, np.float32)
    check_arch_lanes(spec, cfg, masks)
    opt = make_optimizer(cfg)
    count = len(masks)

    def stacked():
        one = init_state(spec, cfg, opt)
        return jax.tree.map(lambda x: jnp.broadcast_to(x, (count, *x.shape)), one)

    abstract = jax.eval_shape(stacked)
    specs = jax.tree.map(lambda _: P(), abstract)
    gates = jnp.asarray(masks)
    inner = make_lane_step(spec, cfg, opt, batch_axis=None, gates_axis=0)
    step = jax.jit(lambda state, batch: inner(state, batch, gates), donate_argnums=0)
    return ArchLanes(jax.devices()[:1], step, specs, abstract, opt, masks)
