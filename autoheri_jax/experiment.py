"""The AutoHERI workflow over one workdir: search -> derive -> retrain -> evaluate.

Each step is a function of (config, workdir) that reads what earlier steps wrote, so the CLI
can run them together (`autoheri run`) or one at a time over the same workdir.
"""

from __future__ import annotations

import dataclasses
import shutil
import time

import jax
import numpy as np

from autoheri_jax import artifacts
from autoheri_jax.artifacts import AUTOHERI, SEARCHED, SELECTION
from autoheri_jax.artifacts.lifecycle import (  # noqa: F401 (saved_config: the CLI's and tests')
    check_batch_sizes,
    install_architecture,
    prepare_workdir,
    saved_config,
    starting,
)
from autoheri_jax.artifacts.model_files import ModelLog, save_trained, trained_params
from autoheri_jax.config import Config, ConfigError, ModelConfig, TrainConfig, to_dict
from autoheri_jax.data.dataset import CTRDataset
from autoheri_jax.data.sources import Splits, load_splits, with_store_options
from autoheri_jax.metrics import funnel_metrics, metric_keys
from autoheri_jax.model.build import build_spec
from autoheri_jax.model.edges import parse_edge
from autoheri_jax.model.spec import ModelSpec
from autoheri_jax.model.variants import ARCH_VARIANTS, VARIANTS, derived_model
from autoheri_jax.progress import say as _say
from autoheri_jax.report.tables import format_table
from autoheri_jax.search import architecture, evidence, selection
from autoheri_jax.train.loop import Resumable, fingerprint, train
from autoheri_jax.train.predict import predict_dataset
from autoheri_jax.train.step import abstract_state, count_params


def load_data(cfg: Config, wd: artifacts.Workdir | None = None, progress: bool = True) -> Splits:
    return load_splits(cfg.data, None if wd is None else wd.root, progress)


def spec_for(model: ModelConfig, data: CTRDataset) -> ModelSpec:
    """The model's static structure on this data; a config the data cannot build (an edge
    into a stage the files lack) is a ConfigError, raised before anything trains."""
    try:
        return build_spec(
            model, data.vocab_sizes, data.num_dense, data.num_stages, data.bag_vocab_sizes
        )
    except ValueError as e:
        raise ConfigError(f"model: {e} (the data has {data.num_stages} stages)") from None


def train_and_save(
    cfg: Config,
    wd: artifacts.Workdir,
    name: str,
    phase: str,
    spec: ModelSpec,
    tcfg: TrainConfig,
    data: Splits,
    progress: bool,
    extra: dict | None = None,
):
    """Trains one model (or finds it trained, or resumes it) and returns its params."""
    done = trained_params(wd, name, phase, spec, tcfg)
    if done is not None:
        return done
    _say(f"[{phase}] {name}: {spec.num_edges} edges, params "
         f"{count_params(abstract_state(spec, tcfg).params)}")  # fmt: skip

    on_log = ModelLog(wd, name, phase, spec)

    def on_resume(step: int) -> None:
        _say(f"[{phase}] {name}: resuming from the checkpoint at step {step}")
        on_log.resumed(step)

    resumable = Resumable(
        directory=wd.path("checkpoints", name),
        cfg=cfg.checkpoint,
        extra={"phase": phase, "model": name, "config": to_dict(cfg), **(extra or {})},
        fingerprint=fingerprint(spec, tcfg),
    )
    try:
        state, stats = train(
            spec,
            tcfg,
            data.train,
            desc=f"{phase}:{name}",
            on_log=on_log,
            progress=progress,
            valid=data.valid,
            parallel=cfg.parallel,
            resumable=resumable,
            on_resume=on_resume,
        )
    finally:
        on_log.close()
    return save_trained(cfg, wd, name, phase, spec, state, stats)


def check_baselines(cfg: Config, data: Splits) -> None:
    """A baseline the data cannot train (esm2 on 2 stages), or a batch larger than a file's
    rows, fails before the search (and config.json), not after."""
    check_batch_sizes(cfg, data)
    for name in cfg.baselines:
        if name in VARIANTS:
            spec_for(VARIANTS[name](cfg.model), data.train)


def search_setup(cfg: Config) -> tuple[ModelConfig, TrainConfig]:
    """The supernet the search trains and how: the relaxed, gated model of the gradient search,
    or (masked) every candidate edge without gates, trained under Bernoulli edge masks."""
    if cfg.edge_search.method == "masked":
        supernet = dataclasses.replace(cfg.model, searched=False)
        return supernet, dataclasses.replace(cfg.search, edge_keep_prob=cfg.edge_search.keep_prob)
    return cfg.model, cfg.search


def search(cfg: Config, wd: artifacts.Workdir, progress: bool = True, fresh: bool = False) -> dict:
    cfg = with_store_options(cfg)  # config.json records the options a prepared store was made with
    with starting(cfg, wd, fresh):  # config.json once the data and the model validate
        data = load_data(cfg, wd, progress)
        rates = {k: round(v, 4) for k, v in data.train.summary()["positive_rate"].items()}
        _say(f"data: train {rates} over {data.train.num_rows} rows")
        check_baselines(cfg, data)
        model, tcfg = search_setup(cfg)
        spec = spec_for(model, data.train)
    params = train_and_save(cfg, wd, SEARCHED, "search", spec, tcfg, data, progress)
    return derive_architecture(cfg, wd, spec, params, data)


def derive_architecture(cfg: Config, wd: artifacts.Workdir, spec, params, data: Splits) -> dict:
    """The searched params -> architecture.json / .txt (the kept edges and operators)."""
    mode = cfg.model.edge_mode
    stage_names = data.train.stage_names
    if cfg.edge_search.method == "masked":
        t0 = time.perf_counter()
        ev = evidence.edge_evidence(spec, params, data.valid, cfg.edge_search)
        _say(f"[search] edge evidence: {time.perf_counter() - t0:.1f}s")
        if cfg.edge_search.select != "off" and ev["batches"] > 0:  # judged: worth comparing
            t0 = time.perf_counter()
            resumable = Resumable(
                directory=wd.path("checkpoints", SELECTION),
                cfg=cfg.checkpoint,
                extra={"phase": "search", "model": SELECTION, "config": to_dict(cfg)},
                fingerprint=selection.selection_fingerprint(spec, cfg.retrain, ev["kept"]),
            )
            sel = selection.select_architecture(
                spec, cfg.retrain, data.train, data.valid, ev["kept"],
                cfg.edge_search.select, cfg.eval_batch_size, resumable,
            )  # fmt: skip
            ev = {**ev, "kept": sel.pop("kept"), "selection": sel}
            _say(f"[search] validated selection: {sel['chosen']} ({time.perf_counter() - t0:.1f}s)")
        record = architecture.evidence_record(spec.edges, ev, stage_names, mode)
    else:
        record = architecture.searched_architecture(
            params, spec, cfg.derive_threshold, stage_names, mode
        )
    install_architecture(wd, record)
    if artifacts.is_writer():  # the record holds the selection now: its batch is done
        shutil.rmtree(wd.path("checkpoints", SELECTION), ignore_errors=True)
    text = architecture.render_architecture(record, len(cfg.model.hidden))
    if artifacts.is_writer():
        wd.path("architecture.txt").write_text(text)
    _say(text)
    return record


def model_configs(cfg: Config, record: dict) -> dict[str, ModelConfig]:
    """Every model the retrain step trains: the derived AutoHERI model, then the baselines."""
    kept = architecture.kept_edges(record)
    models = {AUTOHERI: derived_model(cfg.model, kept, architecture.kept_ops(record))}
    for name in cfg.baselines:
        if name in ARCH_VARIANTS:
            if "candidates" not in record:
                raise ConfigError(
                    f"baseline {name!r} needs the search's candidate edges; architecture.json "
                    "has none (rerun `autoheri search`)"
                )
            candidates = [parse_edge(c["edge"]) for c in record["candidates"]]
            models[name] = ARCH_VARIANTS[name](cfg.model, candidates, kept)
        else:
            models[name] = VARIANTS[name](cfg.model)
    return models


def retrain(cfg: Config, wd: artifacts.Workdir, progress: bool = True) -> None:
    record = wd.read_json("architecture.json", made_by="search")
    data = load_data(cfg, wd, progress)
    for name, model in model_configs(cfg, record).items():
        spec = spec_for(model, data.train)
        extra = {"architecture": record["kept"]} if name == AUTOHERI else {}
        train_and_save(cfg, wd, name, "retrain", spec, cfg.retrain, data, progress, extra)


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
            "test": funnel_metrics(test.labels, cond, entire, stages, test.true_probs),
            "edges": list(model.fixed_edges)
            if model.edge_mode == "fixed"
            else [e.name for e in spec.edges],
            "train": wd.read_json(f"models/{name}/train.json", made_by="retrain"),
            "eval_seconds": time.perf_counter() - t0,
        }
    oracle = None
    if test.true_probs is not None:
        entire = np.cumprod(test.true_probs, axis=1)
        truth = test.true_probs
        oracle = {"test": funnel_metrics(test.labels, truth, entire, stages, truth)}
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


def run(cfg: Config, wd: artifacts.Workdir, progress: bool = True, fresh: bool = False) -> dict:
    cfg = with_store_options(cfg)  # the same config for all three steps (results.json shows it)
    search(cfg, wd, progress, fresh)
    retrain(cfg, wd, progress)
    return evaluate(cfg, wd)
