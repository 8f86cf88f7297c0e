"""A workdir's lifecycle: a start that writes config.json only once the data and the model
validate, a resume that refuses another config (naming the keys), and an architecture record
whose change deletes the outputs that no longer match it."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
from typing import TYPE_CHECKING

from autoheri_jax import artifacts
from autoheri_jax.artifacts import AUTOHERI
from autoheri_jax.config import Config, ConfigError, arch_settings, to_dict
from autoheri_jax.data.sources import check_data_path
from autoheri_jax.progress import say as _say
from autoheri_jax.train.signals import deferred

if TYPE_CHECKING:
    from autoheri_jax.search.records import ArchitectureRecord

_RUNTIME_SECTIONS = ("parallel", "checkpoint")  # how to run, not what: may change on resume
_RUN_OUTPUTS = (
    "metrics.jsonl",
    "edge_history.jsonl",
    "results.json",
    "architecture.json",
    "architecture.txt",
    "models",
    "checkpoints",
)


@contextlib.contextmanager
def starting(cfg: Config, wd: artifacts.Workdir, fresh: bool = False):
    """Readies `wd` for a search whose body (the `with` block) loads the data and builds the
    model: config.json is written only once the body succeeds, so a start that fails on a bad
    data file, store or edge name leaves nothing that blocks the corrected command.

    Before the body, read-only checks: a workdir searched with another config is refused
    (naming the differing keys) unless `fresh`, and the data path must exist. Then, for a new
    start (no config.json, `fresh`, or checkpoint.resume=False), every output of an earlier
    run is deleted; a config.json of the same config resumes instead.
    """
    wd.root.mkdir(parents=True, exist_ok=True)
    old = wd.path("config.json")
    resuming = old.exists() and not fresh and cfg.checkpoint.resume
    if resuming:
        saved_config(wd, cfg)  # refuses a different config, naming the keys
    check_data_path(cfg.data)
    if not resuming and artifacts.is_writer():
        # a store converted from other data (or left by a start that failed) goes with the run
        if not old.exists() or json.loads(old.read_text()).get("data") != to_dict(cfg.data):
            shutil.rmtree(wd.path("store"), ignore_errors=True)
        for stale in _RUN_OUTPUTS:
            path = wd.path(stale)
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
        old.unlink(missing_ok=True)
    yield
    if resuming:
        _say(f"resuming the run in {wd.root} (pass --fresh to start over)")
    wd.write_json("config.json", to_dict(cfg))  # (on resume: this run's devices, save policy)


def check_batch_sizes(cfg: Config, data, phases=("search", "retrain")) -> None:
    """What config validation cannot check for file data (it knows the simulator's row counts
    only): each phase's batch fits the loaded training rows, and a bilevel search's the
    validation rows. Called inside `starting`, so a start refused here records nothing and
    the corrected command is a new start, not "searched with another config"."""
    if cfg.data.source == "simulator":
        return  # Config.validate has checked these against data.num_train / num_valid
    src = cfg.data.path
    for phase in phases:
        bs, rows = getattr(cfg, phase).batch_size, data.train.num_rows
        if bs > rows:
            raise ConfigError(
                f"{phase}.batch_size={bs} exceeds the {rows} training rows of {src}; "
                f"set --set {phase}.batch_size=N with N <= {rows}"
            )
    arch = arch_settings(cfg.edge_search)
    bilevel = arch is not None and arch.bilevel
    if "search" in phases and bilevel and data.valid.num_rows < cfg.search.batch_size:
        raise ConfigError(
            f"edge_search.bilevel needs >= search.batch_size ({cfg.search.batch_size}) validation "
            f"rows; {src} has {data.valid.num_rows}"
        )


def prepare_workdir(cfg: Config, wd: artifacts.Workdir, fresh: bool = False) -> None:
    """`starting` with nothing to validate in between (a caller that loads data itself)."""
    with starting(cfg, wd, fresh):
        pass


def saved_config(wd: artifacts.Workdir, given: Config | None) -> Config:
    """The config a workdir was searched with; a different explicit config is refused."""
    from autoheri_jax.config import from_dict

    saved = from_dict(Config, wd.read_json("config.json", made_by="search"))
    if given is None:
        return saved
    a, b = to_dict(saved), to_dict(given)
    diffs = [f"{s}.{k}" if s else k for s, k in _diff_keys(a, b)]
    diffs = [d for d in diffs if d.split(".")[0] not in _RUNTIME_SECTIONS]
    if diffs:
        raise ConfigError(
            f"{wd.root} was searched with another config; differing keys: {diffs} "
            "(pass --fresh to start over)"
        )
    # Where and how to run may change between steps (8 devices -> 1, another save interval).
    return dataclasses.replace(saved, parallel=given.parallel, checkpoint=given.checkpoint)


def _diff_keys(a: dict, b: dict, prefix: str = ""):
    for k in a:
        if isinstance(a[k], dict):
            yield from _diff_keys(a[k], b[k], f"{prefix}.{k}" if prefix else k)
        elif a[k] != b[k]:
            yield prefix, k


def install_architecture(
    wd: artifacts.Workdir, record: ArchitectureRecord, stale: tuple[str, ...] = ()
) -> None:
    """Writes architecture.json. If the earlier one kept other edges or operators, the model
    retrained from it (and the outputs named in `stale`) no longer match and are deleted."""
    previous = wd.path("architecture.json")
    new = record.to_json()
    with deferred("installing architecture.json"):  # stale outputs go with their record
        if previous.exists() and artifacts.is_writer():
            # read as plain JSON: any earlier record, even one of an older layout, is replaced
            old = json.loads(previous.read_text())
            if (old.get("kept"), old.get("kept_ops")) != (new["kept"], new.get("kept_ops")):
                for path in (wd.path("models", AUTOHERI), wd.path("checkpoints", AUTOHERI)):
                    shutil.rmtree(path, ignore_errors=True)
                for name in stale:
                    wd.path(name).unlink(missing_ok=True)
        wd.write_json("architecture.json", new)
