"""The AutoHERI workflow over one workdir: search -> derive -> retrain -> evaluate.

Each step is a function of (config, workdir) that reads what earlier steps wrote, so the CLI
can run them together (`autoheri run`) or one at a time over the same workdir.
"""

from __future__ import annotations

import json
import shutil
import time

import jax
import numpy as np

from autoheri_jax import artifacts
from autoheri_jax.config import (
    Config,
    ConfigError,
    ModelConfig,
    ParallelConfig,
    TrainConfig,
    to_dict,
)
from autoheri_jax.data.dataset import CTRDataset
from autoheri_jax.data.sources import Splits, load_splits
from autoheri_jax.metrics import funnel_metrics, metric_keys
from autoheri_jax.model.network import ModelSpec, derive_edges, edge_probabilities
from autoheri_jax.models import VARIANTS, build_spec, derived_model
from autoheri_jax.train import abstract_state, count_params, predict_dataset, train

SEARCHED = "autoheri_search"  # the relaxed supernet, kept for inspection
AUTOHERI = "autoheri"  # the derived architecture retrained from fresh weights


def load_data(cfg: Config, wd: artifacts.Workdir | None = None, progress: bool = True) -> Splits:
    return load_splits(cfg.data, None if wd is None else wd.root, progress)


def spec_for(model: ModelConfig, data: CTRDataset) -> ModelSpec:
    return build_spec(
        model, data.vocab_sizes, data.num_dense, data.num_stages, data.bag_vocab_sizes
    )


def _say(msg: str) -> None:
    print(msg, flush=True)


def _train_and_save(
    wd: artifacts.Workdir,
    name: str,
    phase: str,
    spec: ModelSpec,
    tcfg: TrainConfig,
    data: CTRDataset,
    progress: bool,
    valid: CTRDataset | None = None,
    parallel: ParallelConfig | None = None,
):
    counts = count_params(abstract_state(spec, tcfg).params)
    _say(f"[{phase}] {name}: {spec.num_edges} edges, params {counts}")

    def on_log(step: int, rec: dict) -> None:
        probs = rec.pop("edge_probs")
        wd.append_jsonl("metrics.jsonl", {"phase": phase, "model": name, **rec})
        if spec.has_arch:
            named = {e.name: p for e, p in zip(spec.edges, probs, strict=True)}
            wd.append_jsonl("edge_history.jsonl", {"model": name, "step": step, "probs": named})

    state, stats = train(
        spec,
        tcfg,
        data,
        desc=f"{phase}:{name}",
        on_log=on_log,
        progress=progress,
        valid=valid,
        parallel=parallel,
    )
    wd.save_params(name, artifacts.to_host(state.params))
    wd.write_json(f"models/{name}/train.json", {**stats, "edges": [e.name for e in spec.edges]})
    _say(
        f"[{phase}] {name}: {stats['steps']} steps in {stats['seconds']:.1f}s "
        f"({stats['examples_per_s']:,.0f} examples/s)"
    )
    return state


def prepare_workdir(cfg: Config, wd: artifacts.Workdir) -> None:
    """Starts a fresh run in `wd`: saves the config and clears logs of any earlier run."""
    wd.root.mkdir(parents=True, exist_ok=True)
    old = wd.path("config.json")
    if old.exists() and json.loads(old.read_text()).get("data") != to_dict(cfg.data):
        shutil.rmtree(wd.path("store"), ignore_errors=True)  # converted from other data
    for stale in ("metrics.jsonl", "edge_history.jsonl", "results.json", "architecture.json"):
        wd.path(stale).unlink(missing_ok=True)
    wd.write_json("config.json", to_dict(cfg))


def saved_config(wd: artifacts.Workdir, given: Config | None) -> Config:
    """The config a workdir was searched with; a different explicit config is refused."""
    from autoheri_jax.config import from_dict

    saved = from_dict(Config, wd.read_json("config.json", made_by="search"))
    if given is not None and given != saved:
        a, b = to_dict(saved), to_dict(given)
        diffs = [f"{s}.{k}" if s else k for s, k in _diff_keys(a, b)]
        raise ConfigError(f"{wd.root} was searched with another config; differing keys: {diffs}")
    return saved


def _diff_keys(a: dict, b: dict, prefix: str = ""):
    for k in a:
        if isinstance(a[k], dict):
            yield from _diff_keys(a[k], b[k], f"{prefix}.{k}" if prefix else k)
        elif a[k] != b[k]:
            yield prefix, k


def search(cfg: Config, wd: artifacts.Workdir, progress: bool = True) -> dict:
    prepare_workdir(cfg, wd)
    data = load_data(cfg, wd, progress)
    _say(f"data: train {data.train.summary()['positive_rate']} over {data.train.num_rows} rows")
    spec = spec_for(cfg.model, data.train)
    state = _train_and_save(
        wd, SEARCHED, "search", spec, cfg.search, data.train, progress, data.valid, cfg.parallel
    )
    probs = np.asarray(edge_probabilities(state.params, spec))
    logits = np.asarray(state.params["arch"]["edge_logits"])
    kept = derive_edges(probs, spec.edges, cfg.derive_threshold)
    record = artifacts.architecture_record(
        spec.edges, probs, logits, cfg.derive_threshold, data.train.stage_names, cfg.model.edge_mode
    )
    assert record["kept"] == [e.name for e in kept]
    wd.write_json("architecture.json", record)
    text = artifacts.render_architecture(record, len(cfg.model.hidden))
    wd.path("architecture.txt").write_text(text)
    _say(text)
    return record


def model_configs(cfg: Config, record: dict) -> dict[str, ModelConfig]:
    """Every model the retrain step trains: the derived AutoHERI model, then the baselines."""
    models = {AUTOHERI: derived_model(cfg.model, artifacts.kept_edges(record))}
    for name in cfg.baselines:
        models[name] = VARIANTS[name](cfg.model)
    return models


def retrain(cfg: Config, wd: artifacts.Workdir, progress: bool = True) -> None:
    record = wd.read_json("architecture.json", made_by="search")
    data = load_data(cfg, wd, progress)
    for name, model in model_configs(cfg, record).items():
        spec = spec_for(model, data.train)
        _train_and_save(
            wd, name, "retrain", spec, cfg.retrain, data.train, progress, parallel=cfg.parallel
        )


def evaluate(cfg: Config, wd: artifacts.Workdir) -> dict:
    record = wd.read_json("architecture.json", made_by="search")
    data = load_data(cfg, wd, progress=False)
    test, stages = data.test, data.test.stage_names
    models = {}
    for name, model in model_configs(cfg, record).items():
        spec = spec_for(model, test)
        abstract = abstract_state(spec, cfg.retrain).params
        params = wd.load_params(name, abstract, made_by="retrain")
        t0 = time.perf_counter()
        cond, entire = predict_dataset(spec, params, test, cfg.eval_batch_size)
        models[name] = {
            "test": funnel_metrics(test.labels, cond, entire, stages),
            "edges": list(model.fixed_edges)
            if model.edge_mode == "fixed"
            else [e.name for e in spec.edges],
            "train": wd.read_json(f"models/{name}/train.json", made_by="retrain"),
            "eval_seconds": time.perf_counter() - t0,
        }
    oracle = None
    if test.true_probs is not None:
        entire = np.cumprod(test.true_probs, axis=1)
        oracle = {"test": funnel_metrics(test.labels, test.true_probs, entire, stages)}
    results = {
        "schema_version": 1,
        "name": cfg.name,
        "metric_keys": [k for k, _, _ in metric_keys(stages)],
        "data": {"train": data.train.summary(), "test": test.summary()},
        "models": models,
        "oracle": oracle,
        "architecture": record,
        "config": to_dict(cfg),
        "jax": {"version": jax.__version__, "backend": jax.default_backend()},
    }
    wd.write_json("results.json", results)
    _say(format_table(results))
    return results


def format_table(results: dict) -> str:
    keys = results["metric_keys"]
    rows = [(name, m["test"]) for name, m in results["models"].items()]
    if results["oracle"] is not None:
        rows.append(("oracle (true probs)", results["oracle"]["test"]))
    header = f"{'model':<22}" + "".join(f"{k + ' AUC':>11}" for k in keys)
    header += "".join(f"{k + ' NLL':>11}" for k in keys)
    fmt = lambda v: f"{'n/a':>11}" if v is None else f"{v:>11.4f}"
    lines = [f"test metrics ({results['data']['test']['rows']} impressions)", header]
    for name, m in rows:
        lines.append(
            f"{name:<22}"
            + "".join(fmt(m[k]["auc"]) for k in keys)
            + "".join(fmt(m[k]["nll"]) for k in keys)
        )
    return "\n".join(lines)


def run(cfg: Config, wd: artifacts.Workdir, progress: bool = True) -> dict:
    search(cfg, wd, progress)
    retrain(cfg, wd, progress)
    return evaluate(cfg, wd)
