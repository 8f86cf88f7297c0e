"""K seeds of one model trained in one jitted step: `jax.vmap` over a leading seed axis.

A study-size model (towers 64-32-16, batch 1024) is too small to fill a CPU or an accelerator:
per-step overhead, not arithmetic, sets its cost. Stacking K independent runs along a new
leading axis of the state (params, optimiser state, RNG key, step) and of the batch turns K
small steps into one step K times as wide, paid for once.

What each seed keeps of its own run: its weight-init key and step keys (fold_in(rng, step)
from its own TrainConfig.seed), and its own data order (each seed's `StepBatchSource`, from its
own dataset and seed; with the data redrawn per seed each seed also reads its own rows). So
seed k computes what `train(spec, cfgs[k], datas[k])` computes. The arithmetic is the same
per seed; XLA may order a vmapped reduction differently from an unbatched one, so results
match separate runs within float rounding (tests/test_seed_batch.py), bitwise where it does
not.

Scope: one device, no bi-level search, no mid-run checkpoints (a study resumes whole runs: a
seed group that stops is trained again). Specs and every TrainConfig field but the seed must
agree; `group_by_spec` splits a set of runs into groups that can share a step.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from autoheri_jax.config import ConfigError, TrainConfig, is_bilevel
from autoheri_jax.data.dataset import CTRDataset
from autoheri_jax.data.pipeline import StepBatchSource
from autoheri_jax.model.spec import ModelSpec
from autoheri_jax.train.lanes import lane_batches, run_lanes
from autoheri_jax.train.optim import make_optimizer
from autoheri_jax.train.step import TrainState, init_state, make_step_fn


class StackedSource:
    """Step -> every seed's batch of that step, stacked along a new leading axis (K x B ...)."""

    def __init__(self, sources: Sequence[StepBatchSource]):
        lengths = {len(s) for s in sources}
        if len(lengths) != 1:
            raise ConfigError(f"seeds disagree on the number of steps: {sorted(lengths)}")
        self.sources = list(sources)

    def __len__(self) -> int:
        return len(self.sources[0])

    def __getitem__(self, step: int) -> dict[str, np.ndarray]:
        batches = [s[step] for s in self.sources]
        return {k: np.stack([b[k] for b in batches]) for k in batches[0]}


def stack_trees(trees: Sequence) -> object:
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def unstack_tree(tree, k: int) -> object:
    return jax.tree.map(lambda x: x[k], tree)


def _same_but_seed(cfgs: Sequence[TrainConfig]) -> None:
    base = dataclasses.replace(cfgs[0], seed=0)
    for c in cfgs[1:]:
        if dataclasses.replace(c, seed=0) != base:
            raise ConfigError("vmapped seeds must share every TrainConfig field but `seed`")
    if is_bilevel(cfgs[0]):
        raise ConfigError("vmapped seeds do not support search.bilevel; run seeds one by one")


def make_seed_step(spec: ModelSpec, cfg: TrainConfig, optimizer=None) -> Callable:
    """The jitted K-seed step: (stacked state, K x B batch) -> (stacked state, stacked aux)."""
    optimizer = make_optimizer(cfg) if optimizer is None else optimizer
    return jax.jit(jax.vmap(make_step_fn(spec, cfg, optimizer)), donate_argnums=0)


def train_seeds(
    spec: ModelSpec,
    cfgs: Sequence[TrainConfig],
    datas: Sequence[CTRDataset],
    *,
    desc: str,
    on_logs: Sequence[Callable[[int, dict], None] | None] | None = None,
    progress: bool = True,
) -> list[tuple[TrainState, dict]]:
    """Trains len(cfgs) seeds of `spec` together; -> [(state, stats)] per seed, as `train`.

    on_logs[k](step, record) gets seed k's records every log_every steps and at the end.
    Raises NonFiniteLossError naming the seed and step if any seed's loss went non-finite.
    """
    from autoheri_jax.train.loop import check_schedule

    if len(cfgs) != len(datas) or not cfgs:
        raise ValueError(f"{len(cfgs)} configs for {len(datas)} datasets")
    _same_but_seed(cfgs)
    cfg = cfgs[0]
    for d in datas:
        if d.num_rows < cfg.batch_size:
            raise ConfigError(f"{desc}: batch_size {cfg.batch_size} exceeds {d.num_rows} rows")
    sources = [
        StepBatchSource(d, cfg.batch_size, c.seed, cfg.epochs)
        for d, c in zip(datas, cfgs, strict=True)
    ]
    source = StackedSource(sources)
    check_schedule(spec, cfg, len(source), desc)
    batches = lane_batches(source)
    optimizer = make_optimizer(cfg)
    state = stack_trees([init_state(spec, c, optimizer) for c in cfgs])
    step_fn = make_seed_step(spec, cfg, optimizer)
    total, k_seeds = len(source), len(cfgs)
    state, seconds = run_lanes(
        step_fn, state, batches, total=total, log_every=cfg.log_every,
        examples_per_step=cfg.batch_size * k_seeds,
        lane_names=[f"seed {c.seed} (index {k})" for k, c in enumerate(cfgs)],
        desc=desc, bar_desc=f"{desc} x{k_seeds} seeds", progress=progress,
        epoch_of=lambda k, step: (step - 1) // sources[k].steps_per_epoch, on_logs=on_logs,
    )  # fmt: skip
    stats = {
        "steps": total,
        "resumed_at": 0,
        "seconds": seconds,  # the whole group's time: every seed was trained in it
        "examples_per_s": total * cfg.batch_size * k_seeds / seconds,
        "launcher": "vmap",
        "devices": 1,
        "vmapped_seeds": k_seeds,
    }
    return [(unstack_tree(state, k), dict(stats)) for k in range(k_seeds)]


def group_by_spec(specs: Sequence[ModelSpec]) -> list[list[int]]:
    """Indices of equal specs, grouped in first-seen order: each group can share a step."""
    groups: dict[ModelSpec, list[int]] = {}
    for i, s in enumerate(specs):
        groups.setdefault(s, []).append(i)
    return list(groups.values())
