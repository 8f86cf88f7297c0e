"""What a search method is to the workflow (experiment.py): how it sets up the supernet it
trains, whether it trains one, and how it turns the search into an architecture record.

Each method is one module of this package holding one `SearchMethod`; its settings are its
config class in method_config.py (jax-free, so a config validates before jax loads).
`LaneLogs` and `batch_checkpoints` are what the methods that retrain a batch of candidates
(masked's selection, ablation) share: per-lane logs and the batch's resumable checkpoints.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from autoheri_jax.artifacts import SELECTION, Workdir
from autoheri_jax.artifacts.model_files import ModelLog
from autoheri_jax.config import Config, ModelConfig, SupernetConfig, supernet_config, to_dict
from autoheri_jax.model.spec import ModelSpec
from autoheri_jax.progress import say
from autoheri_jax.search.records import ArchitectureRecord
from autoheri_jax.train.loop import Resumable, fingerprint

if TYPE_CHECKING:
    from autoheri_jax.data.sources import Splits
    from autoheri_jax.search.selection import LaneBatch

# (the record, the candidates' trained batch when the method trained one, else None): a
# batch's lanes become the run's models (experiment.save_lane_models) instead of retrains
Derived = tuple[ArchitectureRecord, "LaneBatch | None"]


@dataclasses.dataclass(frozen=True)
class SearchMethod:
    """One edge-search method.

    name: its `edge_search.method` tag (the key of method_config.METHOD_CONFIGS).
    supernet: cfg -> (the model config the supernet is built from, how it trains); a method
        that trains no supernet returns the plain model and settings (never trained).
    trains_supernet: False when the search trains its candidates directly (ablation).
    derive: (cfg, workdir, supernet spec, its trained params or None, data) -> Derived.
    """

    name: str
    supernet: Callable[[Config], tuple[ModelConfig, SupernetConfig]]
    derive: Callable[[Config, Workdir, ModelSpec, Any, Splits], Derived]
    trains_supernet: bool = True


def plain_supernet(cfg: Config) -> tuple[ModelConfig, SupernetConfig]:
    """The searched model as configured, trained with `Config.search`'s settings alone."""
    return cfg.model, supernet_config(cfg.search)


class LaneLogs:
    """Each lane's log records (metrics.jsonl, tb/) as model "<batch>:<lane>" of the search
    phase, as the `on_log` / `on_resume` keywords of the batch's trainer."""

    def __init__(self, wd: Workdir, batch: str, names: list[str], spec: ModelSpec):
        self.batch, self.logs = batch, [ModelLog(wd, f"{batch}:{n}", "search", spec) for n in names]

    def on_resume(self, step: int) -> None:
        say(f"[search] {self.batch} batch: resuming from the checkpoint at step {step}")
        for log in self.logs:
            log.resumed(step)

    def __enter__(self) -> dict:
        return {"on_log": self.logs, "on_resume": self.on_resume}

    def __exit__(self, *exc) -> None:
        for log in self.logs:
            log.close()


def batch_checkpoints(cfg: Config, wd: Workdir, spec: ModelSpec, masks) -> Resumable:
    """Where the search's batch of retrained candidates checkpoints (removed once the
    architecture record holds its outcome: experiment.derive_architecture)."""
    return Resumable(
        directory=wd.path("checkpoints", SELECTION),
        cfg=cfg.checkpoint,
        extra={"phase": "search", "model": SELECTION, "config": to_dict(cfg)},
        fingerprint=fingerprint(spec, cfg.retrain, masks),
    )
