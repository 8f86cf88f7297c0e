"""K seeds of one model trained in one jitted step: `jax.vmap` over a leading seed axis.

A study-size model (towers 64-32-16, batch 1024) is too small to fill a CPU or an accelerator:
per-step overhead, not arithmetic, sets its cost. Stacking K independent runs along a new
leading axis of the state (params, optimiser state, RNG key, step) and of the batch turns K
small steps into one step K times as wide, paid for once.

What each seed keeps of its own run: its weight-init key and step keys (fold_in(rng, step)
from its own TrainConfig.seed), and its own data order (each seed's `StepBatchSource`, from its
own dataset and seed; with the data redrawn per seed each seed also reads its own rows). So
seed k computes what `train_model(spec, cfgs[k], datas[k])` computes. The arithmetic is the same
per seed; XLA may order a vmapped reduction differently from an unbatched one, so results
match separate runs within float rounding (tests/test_seed_batch.py), bitwise where it does
not.

Scope: one device, no bi-level search. The K seeds are one `loop.train` run whose launcher is
lanes.SeedLanes, with fit.usual_hooks: the same records, non-finite check, signal handling,
and checkpoints holding every seed, so a stopped seed group resumes. Specs and every
TrainConfig field but the seed must agree; `group_by_spec` splits a set of runs into groups
that can share a step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from autoheri_jax.config import TrainConfig
from autoheri_jax.data.dataset import CTRDataset
from autoheri_jax.model.spec import ModelSpec
from autoheri_jax.train.checkpoint_hook import Resumable
from autoheri_jax.train.early_stopping import lane_stats
from autoheri_jax.train.feed import check_sizes
from autoheri_jax.train.fit import usual_hooks
from autoheri_jax.train.lanes import (  # noqa: F401 (the names benchmarks and tests import)
    StackedSource,
    make_seed_step,
    seed_lanes,
    stack_trees,
    unstack_tree,
)
from autoheri_jax.train.loop import train
from autoheri_jax.train.step import TrainState


def train_seeds(
    spec: ModelSpec,
    cfgs: Sequence[TrainConfig],
    datas: Sequence[CTRDataset],
    *,
    desc: str,
    on_logs: Sequence[Callable[[int, dict], None] | None] | None = None,
    progress: bool = True,
    resumable: Resumable | None = None,
    on_resume: Callable[[int], None] | None = None,
    valids: Sequence[CTRDataset] | None = None,
) -> list[tuple[TrainState, dict]]:
    """Trains len(cfgs) seeds of `spec` together; -> [(state, stats)] per seed, as `train`.

    on_logs[k](step, record) gets seed k's records every log_every steps and at the end.
    Raises NonFiniteLossError naming the seed and step if any seed's loss went non-finite.
    With `resumable`, the K seeds checkpoint together and a rerun resumes them (loop.train).
    With early_stop_patience > 0, valids[k] scores seed k (train/early_stopping.py).
    ValueError when cfgs and datas differ in length or are empty; ConfigError as
    `lanes.check_seed_lanes` and for a dataset smaller than one batch.
    """
    if len(cfgs) != len(datas) or not cfgs:
        raise ValueError(f"{len(cfgs)} configs for {len(datas)} datasets")
    cfgs, datas, cfg = list(cfgs), list(datas), cfgs[0]
    valid = list(valids) if valids is not None and cfg.early_stop_patience else None
    for d in datas:
        check_sizes(cfg, d, None, desc)
    launcher = seed_lanes(spec, cfgs, datas)
    hooks = usual_hooks(
        cfg,
        on_log=on_logs or (),
        progress=progress,
        resumable=resumable,
        on_resume=on_resume,
        early_stop_valid=valid,
    )
    state, stats = train(launcher, hooks, spec=spec, cfg=cfg, data=None, desc=desc)
    return [(unstack_tree(state, k), lane_stats(stats, k)) for k in range(len(cfgs))]


def group_by_spec(specs: Sequence[ModelSpec]) -> list[list[int]]:
    """Indices of equal specs, grouped in first-seen order: each group can share a step."""
    groups: dict[ModelSpec, list[int]] = {}
    for i, s in enumerate(specs):
        groups.setdefault(s, []).append(i)
    return list(groups.values())
