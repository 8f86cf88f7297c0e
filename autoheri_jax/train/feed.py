"""The batches of one training run, and the checks that the data and the schedule fit.

`InputFeed` owns the grain iterators over the launcher's step source (`Launcher.batch_source`:
one dataset, or one per lane stacked) and, for the bi-level search, the validation batches;
its position is what a checkpoint records beside the state. `check_sizes` and
`check_schedule` refuse a run before any compute: a batch larger than its rows, a gradient
search whose warm-up leaves its edge logits too few steps.
"""

from __future__ import annotations

import jax

from autoheri_jax.config import ConfigError, TrainConfig, arch_of, is_bilevel
from autoheri_jax.data.dataset import CTRDataset
from autoheri_jax.data.pipeline import StepBatchSource, train_iterator
from autoheri_jax.model.spec import ModelSpec

VALID_SEED_OFFSET = 7919  # the bi-level validation stream's permutation seed: cfg.seed + this
MIN_ARCH_SHARE = 0.25  # least share of a gradient search's steps in which its edge logits move


def process_shard() -> dict:
    """This process's slice of every step's global batch (data/pipeline.py)."""
    return {"process_index": jax.process_index(), "process_count": jax.process_count()}


class InputFeed:
    """The training batches (and, for the bi-level search, validation batches) of one run,
    cut per process from the seeded global permutation (data/pipeline.py)."""

    def __init__(self, source, cfg: TrainConfig, valid: CTRDataset | None):
        self.source = source
        self.train = train_iterator(self.source)
        self.valid = None
        if is_bilevel(cfg):
            valid_epochs = -(-len(self.source) // (valid.num_rows // cfg.batch_size))
            valid_source = StepBatchSource(
                valid, cfg.batch_size, cfg.seed + VALID_SEED_OFFSET, valid_epochs, **process_shard()
            )
            self.valid = train_iterator(valid_source, num_threads=1, prefetch=2)

    @property
    def total_steps(self) -> int:
        return len(self.source)

    def epoch_of(self, step: int) -> int:
        """0-based epoch of the `step`-th step (steps count from 1)."""
        return (step - 1) // self.source.steps_per_epoch

    def next(self) -> dict:
        """The next training batch; for the bi-level search with the next validation batch
        under "valid"."""
        batch = next(self.train)
        if self.valid is not None:
            batch["valid"] = next(self.valid)
        return batch

    def get_state(self) -> dict:
        """The iterators' positions ({"train", "valid"}) for a checkpoint; `set_state` takes
        it back."""
        valid = None if self.valid is None else self.valid.get_state()
        return {"train": self.train.get_state(), "valid": valid}

    def set_state(self, state: dict) -> None:
        self.train.set_state(state["train"])
        if self.valid is not None:
            self.valid.set_state(state["valid"])


def check_sizes(cfg: TrainConfig, data: CTRDataset, valid: CTRDataset | None, desc: str):
    """ConfigError naming `desc` when `data` (or, for the bi-level search, `valid`) has fewer
    rows than one batch."""
    if is_bilevel(cfg) and (valid is None or valid.num_rows < cfg.batch_size):
        rows = 0 if valid is None else valid.num_rows
        raise ConfigError(
            f"{desc}: bilevel needs >= batch_size ({cfg.batch_size}) validation rows, got {rows}"
        )
    if data.num_rows < cfg.batch_size:
        raise ConfigError(
            f"{desc}: batch_size {cfg.batch_size} exceeds the {data.num_rows} training rows"
        )


def check_schedule(spec: ModelSpec, cfg: TrainConfig, total: int, desc: str) -> None:
    """Refuses a gradient search whose warm-up swallows it: with arch_warmup_steps near the
    step count (a larger batch, a smaller file) the gates barely move from 0.5 and the kept
    set is decided by noise. Checked against the run's real step count, before any compute."""
    arch = arch_of(cfg)
    if not spec.has_arch or arch is None:
        return
    moving = total - arch.arch_warmup_steps
    if moving < max(1, MIN_ARCH_SHARE * total):
        raise ConfigError(
            f"{desc}: edge_search.arch_warmup_steps={arch.arch_warmup_steps} leaves the edge "
            f"logits {max(moving, 0)} of the search's {total} steps (batch_size {cfg.batch_size}, "
            f"{cfg.epochs} epoch(s)); at least {MIN_ARCH_SHARE:.0%} must move them: set "
            f"edge_search.arch_warmup_steps <= {int((1 - MIN_ARCH_SHARE) * total)} (about 40% "
            f"is {int(0.4 * total)}) and edge_search.entropy_warmup_steps to about "
            f"{int(0.6 * total)}, or use edge_search.method=masked"
        )
