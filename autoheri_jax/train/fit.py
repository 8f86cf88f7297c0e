"""One model trained by `loop.train`: its launcher and the usual hooks, built from the configs.

    launcher = make_data_parallel(spec, cfg, parallel)          # single, mesh or pmap
    hooks = usual_hooks(cfg, on_log=[on_log], resumable=..., ...)
    state, stats = train(launcher, hooks, spec=spec, cfg=cfg, data=data, desc=desc)

`train_model` is that, for the callers that train one model (experiment, evolution, the
tests); seed lanes (seed_batch.train_seeds) and architecture lanes
(arch_batch.train_architectures) build their launcher and take the same hooks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from autoheri_jax.config import ParallelConfig, TrainConfig, is_bilevel
from autoheri_jax.data.dataset import CTRDataset
from autoheri_jax.model.spec import ModelSpec
from autoheri_jax.train.checkpoint_hook import Checkpoint, Resumable, scoring_rows
from autoheri_jax.train.feed import check_sizes
from autoheri_jax.train.hooks import CheckFinite, Hook, Log, Signals, Validate
from autoheri_jax.train.loop import train
from autoheri_jax.train.parallel import make_data_parallel
from autoheri_jax.train.step import TrainState


def usual_hooks(
    cfg: TrainConfig,
    *,
    on_log: Sequence[Callable[[int, dict], None] | None] = (),
    progress: bool = True,
    resumable: Resumable | None = None,
    on_resume: Callable[[int], None] | None = None,
    scoring: CTRDataset | None = None,
    early_stop_valid: CTRDataset | Sequence[CTRDataset] | None = None,
) -> list[Hook]:
    """The hooks every trainer here runs, in the order their side effects must come: at a
    log point (every cfg.log_every steps) the non-finite check, the validation losses
    (`scoring`: checkpoint-ranking rows; `early_stop_valid`: early stopping's split or
    splits), the records to `on_log` (one callback per model or lane); with `resumable`, the
    signal check and the checkpoint (SIGTERM / SIGINT stop the run only then)."""
    every = cfg.log_every
    validate = Validate(every, scoring, early_stop_valid)
    hooks: list[Hook] = [
        CheckFinite(every),
        validate,
        Log(every, on_log, progress=progress, valid_loss=is_bilevel(cfg), on_resume=on_resume),
    ]
    if resumable is not None:
        checkpoint = Checkpoint(resumable, scoring, early_stop=validate)
        hooks += [Signals(checkpoint), checkpoint]
    return hooks


def train_model(
    spec: ModelSpec,
    cfg: TrainConfig,
    data: CTRDataset,
    *,
    desc: str,
    on_log: Callable[[int, dict], None] | None = None,
    progress: bool = True,
    valid: CTRDataset | None = None,
    parallel: ParallelConfig | None = None,
    resumable: Resumable | None = None,
    on_resume: Callable[[int], None] | None = None,
) -> tuple[TrainState, dict]:
    """Trains one model for cfg.epochs (resuming from `resumable`'s checkpoints when there
    are any); -> (the state in the canonical layout, stats), as `loop.train`.

    `on_log(step, record)` receives host-side metrics every cfg.log_every steps and at the end;
    `on_resume(step)` is called once when a checkpoint was restored. `valid` feeds the arch
    gradient of a bi-level search (edge_search.bilevel), scores checkpoints and
    (early_stop_patience > 0) stops early.
    `parallel` picks the devices and the launcher (parallel.make_data_parallel).

    Raises ConfigError for too few rows or a setup the launcher cannot run, CheckpointError
    for a checkpoint that does not fit this run, NonFiniteLossError when the loss goes NaN or
    inf, and TrainingInterrupted on SIGTERM / SIGINT (after checkpointing, with `resumable`)."""
    check_sizes(cfg, data, valid, desc)
    launcher = make_data_parallel(spec, cfg, parallel or ParallelConfig())
    scoring = None if resumable is None else scoring_rows(valid, resumable.cfg)
    hooks = usual_hooks(
        cfg,
        on_log=[on_log],
        progress=progress,
        resumable=resumable,
        on_resume=on_resume,
        scoring=scoring,
        early_stop_valid=valid,
    )
    return train(launcher, hooks, spec=spec, cfg=cfg, data=data, desc=desc, valid=valid)
