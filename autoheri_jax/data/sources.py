"""From a data config to train / valid / test datasets: the simulator, or files via the store.

Files of any supported format are converted once into the columnar store (see store.py) under
the run's workdir (`<workdir>/store`), or used in place when `data.path` already is a finished
store (`autoheri prepare` writes one). Conversion is idempotent, so `search`, `retrain` and
`evaluate` share one store, and an interrupted conversion is redone rather than trusted.

A store used in place was made with its own preparation options (min_count, valid_fraction,
seed, on_bad_row), which fix its vocabularies and validation carve whatever the config says;
`with_store_options` writes the store's values into the config (with one warning line per key
that differed), so config.json and results.json record the options the data was made with.
The store's columns are hashed once per workdir (integrity.py; `--verify`: every command).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from autoheri_jax.data import integrity
from autoheri_jax.data.config import DataConfig
from autoheri_jax.data.dataset import CTRDataset
from autoheri_jax.data.errors import DataFormatError, StoreError
from autoheri_jax.data.simulator import simulate_funnel
from autoheri_jax.data.store import is_finished, open_split, read_manifest
from autoheri_jax.safe_output import refuse_overlap

if TYPE_CHECKING:  # the data package sits below config: it reads a Config, never imports it
    from autoheri_jax.config import Config

RAW_ALICCP_MARKER = "sample_skeleton_train.csv"


STORE_OPTIONS = ("min_count", "valid_fraction", "seed", "on_bad_row")  # DataConfig = manifest
_log = logging.getLogger("autoheri_jax.data.sources")


class Splits(NamedTuple):
    """A run's train / valid / test datasets (same fields, vocabularies and stages)."""

    train: CTRDataset
    valid: CTRDataset
    test: CTRDataset


def world_args(d: DataConfig) -> dict:
    """The simulator's world arguments of `d` (simulate_funnel / hidden_terms, less num_rows)."""
    return dict(
        seed=d.seed,
        num_stages=d.num_stages,
        num_users=d.num_users,
        num_items=d.num_items,
        zipf_exponent=d.zipf_exponent,
        click_rate=d.click_rate,
        stage_rates=d.stage_rates,
        cascade_strength=d.cascade_strength,
        num_dense=d.num_dense,
        latent_dim=d.latent_dim,
        noise_fields=d.noise_fields,
        world=d.world,
        planted_edge=d.planted_edge,
    )


def simulated_splits(d: DataConfig) -> Splits:
    """Train and valid from the world's first draw of impressions, test from a second
    independent draw, so the test rows are the same whatever the training size."""
    args = world_args(d)
    fit = simulate_funnel(num_rows=d.num_train + d.num_valid, **args)
    train, valid = fit.split([d.num_train, d.num_valid])
    return Splits(train, valid, simulate_funnel(num_rows=d.num_test, draw=1, **args))


def resolve_format(path: Path, fmt: str) -> str:
    """`fmt`, or for "auto" the format of what `path` holds: a finished store, a raw Ali-CCP
    directory or a processed file's format (formats.detect_format, which raises
    DataFormatError when it recognises none)."""
    if fmt != "auto":
        return fmt
    if is_finished(path):
        return "store"
    if path.is_dir() and (path / RAW_ALICCP_MARKER).is_file():
        return "aliccp_raw"
    from autoheri_jax.data.formats import detect_format

    return detect_format(path)


def prepare_store(
    d: DataConfig, out: Path, *, path: str | None = None, fmt: str | None = None, progress=True
) -> Path:
    """Converts the files at `path` (default d.path) into a store at `out`; returns the store
    (`path` itself when it is a finished store). DataFormatError for a missing or malformed
    input, StoreError for an unfinished store, OutputError when `out` overlaps the input."""
    src = Path(path or d.path).expanduser().resolve()
    if not src.exists():
        raise DataFormatError(src, None, "no such file or directory")
    fmt = resolve_format(src, fmt or d.format)
    if fmt == "store":
        read_manifest(src)  # refuses an unfinished store, naming it
        return src
    out = refuse_overlap(out, {"--data": src}, "--out")  # the store replaces what is at out
    options = {
        "min_count": d.min_count,
        "valid_fraction": d.valid_fraction,
        "seed": d.seed,
        "on_bad_row": d.on_bad_row,
    }
    if fmt == "aliccp_raw":
        from autoheri_jax.data.aliccp_raw import prepare_aliccp_raw

        prepare_aliccp_raw(src, out, progress=progress, **options)
    else:
        from autoheri_jax.data.formats import convert_processed

        convert_processed(src, out, fmt=fmt, progress=progress, **options)
    return out


def with_store_options(cfg: Config) -> Config:
    """cfg with data.min_count etc. set to those of the store data.path points at (if it is a
    prepared store whose options differ), each change said in one warning line.

    Not a refusal: experiments/configs/samples.py (min_count=1) is meant to run on stores
    prepared with another --min-count (tests/test_prepare_aliccp.py trains it on one made with
    2); recording the store's values keeps that working and config.json truthful."""
    d = cfg.data
    root = Path(d.path).expanduser()
    if d.source != "files" or d.format not in ("auto", "store") or not is_finished(root):
        return cfg
    options = read_manifest(root).get("options", {})
    changed = {}
    for key in STORE_OPTIONS:
        given = getattr(d, key)
        if key in options and options[key] != given:
            changed[key] = type(given)(options[key])
            flag = "--" + key.replace("_", "-")
            _log.warning(
                f"data.{key}={given} but {root} was prepared with {flag} "
                f"{options[key]}: using and recording data.{key}={options[key]} "
                f"(to train with {given}, prepare a store with {flag} {given})"
            )
    if not changed:
        return cfg
    return dataclasses.replace(cfg, data=dataclasses.replace(d, **changed))


def check_data_path(d: DataConfig) -> None:
    """The cheap part of loading, before a run writes anything: the data path exists and, if it
    is a prepared store, its manifest reads and it has the train and test splits a run needs.
    (Rows and columns are checked when they load; a run records its config only after that.)"""
    if d.source != "files":
        return
    root = Path(d.path).expanduser().resolve()
    if not root.exists():
        raise DataFormatError(root, None, "no such file or directory (data.path / --data)")
    if d.format == "store" or (d.format == "auto" and (root / "manifest.json").exists()):
        _require_splits(root, read_manifest(root))  # read_manifest names an unfinished store


def _require_splits(root: Path, manifest: dict) -> None:
    missing = [s for s in ("train", "test") if s not in manifest["splits"]]
    if missing:
        raise StoreError(
            f"{root}: no {' or '.join(missing)} split (has {sorted(manifest['splits'])}); a run "
            "trains on train and reports test: prepare the store from files with both"
        )


def file_splits(d: DataConfig, cache_dir: Path, progress: bool = True) -> Splits:
    """The splits of the store prepared from d.path at cache_dir / "store" (or of d.path, a
    store), its hashes verified once per cache_dir; valid is empty when the store has none.
    StoreError when the store lacks train or test."""
    root = prepare_store(d, cache_dir / "store", progress=progress)
    manifest = read_manifest(root)
    _require_splits(root, manifest)
    integrity.verify(root, manifest, record_dir=cache_dir)  # hashed once per workdir
    train = open_split(root, "train", manifest)
    valid = (
        open_split(root, "valid", manifest)
        if "valid" in manifest["splits"]
        else train.take(slice(0, 0))
    )
    test = open_split(root, "test", manifest)
    return Splits(
        *(dataclasses.replace(s, max_bag_len=d.max_bag_len) for s in (train, valid, test))
    )


def load_splits(d: DataConfig, cache_dir: Path | None = None, progress: bool = True) -> Splits:
    """The run's splits: simulated, or read from files (which need `cache_dir`, the workdir
    the store is prepared and verified in; ValueError without it)."""
    if d.source == "simulator":
        return simulated_splits(d)
    if cache_dir is None:
        raise ValueError("file data needs a cache directory for its store")
    return file_splits(d, cache_dir, progress)
