"""The AutoHERI workflow over one workdir: search -> derive -> retrain -> evaluate.

Each step is a function of (config, workdir) that reads what earlier steps wrote, so the CLI
can run them together (`autoheri run`) or one at a time over the same workdir.
"""

from __future__ import annotations

import contextlib
import dataclasses
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
    TrainConfig,
    to_dict,
)
from autoheri_jax.data.dataset import CTRDataset
from autoheri_jax.data.sources import Splits, check_data_path, load_splits, with_store_options
from autoheri_jax.metrics import CALIBRATION_BINS, funnel_metrics, metric_keys
from autoheri_jax.model.build import build_spec
from autoheri_jax.model.edges import parse_edge
from autoheri_jax.model.spec import ModelSpec
from autoheri_jax.model.variants import ARCH_VARIANTS, VARIANTS, derived_model
from autoheri_jax.progress import say as _say
from autoheri_jax.report import tensorboard
from autoheri_jax.search import architecture, evidence, selection
from autoheri_jax.train.loop import Resumable, fingerprint, train
from autoheri_jax.train.predict import predict_dataset
from autoheri_jax.train.signals import deferred
from autoheri_jax.train.step import abstract_state, count_params

SEARCHED = "autoheri_search"  # the relaxed supernet, kept for inspection
AUTOHERI = "autoheri"  # the derived architecture retrained from fresh weights


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


def _drop_later_records(wd: artifacts.Workdir, model: str, step: int) -> None:
    """A resumed model re-logs the steps after its checkpoint: drop the first telling of them."""
    for name in ("metrics.jsonl", "edge_history.jsonl"):
        path = wd.path(name)
        if not path.exists() or not artifacts.is_writer():
            continue
        records = artifacts.read_jsonl(path)
        keep = [r for r in records if not (r["model"] == model and r["step"] > step)]
        path.write_text("".join(json.dumps(r) + "\n" for r in keep))


class ModelLog:
    """A model's log records into the workdir: metrics.jsonl, edge_history.jsonl and
    TensorBoard scalars (`tensorboard --logdir <workdir>/tb`). Called as on_log(step, record)."""

    def __init__(self, wd: artifacts.Workdir, name: str, phase: str, spec: ModelSpec):
        self.wd, self.name, self.phase, self.spec = wd, name, phase, spec
        self.tb = tensorboard.ScalarWriter(wd.path("tb", f"{phase}_{name}"))

    def __call__(self, step: int, rec: dict) -> None:
        probs = rec.pop("edge_probs")
        self.wd.append_jsonl("metrics.jsonl", {"phase": self.phase, "model": self.name, **rec})
        scalars = tensorboard.flatten_scalars(rec)  # loss, stage_bce/<i>, entropy, examples_per_s
        if self.spec.has_arch:
            named = {e.name: p for e, p in zip(self.spec.edges, probs, strict=True)}
            record = {"model": self.name, "step": step, "probs": named}
            self.wd.append_jsonl("edge_history.jsonl", record)
            scalars |= {f"edge_prob/{edge}": p for edge, p in named.items()}
        if artifacts.is_writer():
            self.tb.scalars(scalars, step)  # the first write of a fresh run drops older files

    def resumed(self, step: int) -> None:
        """Training resumed from the checkpoint at `step`: the steps after it are logged
        again, so their first telling goes (JSON lines) or is purged (TensorBoard)."""
        _drop_later_records(self.wd, self.name, step)
        if artifacts.is_writer():
            self.tb.start(resumed_at=step + 1)

    def close(self) -> None:
        self.tb.close()


def trained_params(wd: artifacts.Workdir, name: str, phase: str, spec, tcfg: TrainConfig):
    """The params of a model this workdir already trained (None if it has not). Params that
    cannot be read (missing, corrupted) are moved aside, models/<name> -> models/<name>.invalid-<n>,
    with one warning line, and None returned: the model is trained again (from its checkpoints
    when they were kept)."""
    if not wd.path("models", name, "train.json").exists():
        return None
    try:
        params = wd.load_params(name, abstract_state(spec, tcfg).params, made_by=phase)
    except artifacts.MissingArtifactError as e:
        from autoheri_jax.progress import get_logger

        model_dir, n = wd.path("models", name), 0
        while (aside := model_dir.with_name(f"{name}.invalid-{n}")).exists():
            n += 1
        if artifacts.is_writer() and model_dir.exists():
            model_dir.rename(aside)
        if not wd.path("checkpoints", name).is_dir():  # retrained from step 0: logged anew
            _drop_later_records(wd, name, -1)
        what = str(e).partition(": run `")[0]  # the file and its problem, not the hint
        get_logger(__name__).warning(f"[{phase}] {name}: {what}; moved {model_dir} to {aside}, "
                                     "training the model again")  # fmt: skip
        return None
    _say(f"[{phase}] {name}: already trained in {wd.root}; reusing it")
    return params


def save_trained(
    cfg: Config, wd: artifacts.Workdir, name: str, phase: str, spec, state, stats: dict
):
    """Writes a trained model's params and train.json, drops its checkpoints; -> params."""
    params = artifacts.to_host(state.params)
    # train.json marks the params complete, so a signal waits until both are written; the
    # checkpoints go only after that (a crash before it resumes from them)
    with deferred(f"saving models/{name}"):
        wd.save_params(name, params)
        wd.write_json(f"models/{name}/train.json", {**stats, "edges": [e.name for e in spec.edges]})
    if not cfg.checkpoint.keep_after_finish and artifacts.is_writer():
        shutil.rmtree(wd.path("checkpoints", name), ignore_errors=True)  # params are the record
    _say(
        f"[{phase}] {name}: {stats['steps'] - stats['resumed_at']} steps in "
        f"{stats['seconds']:.1f}s ({stats['examples_per_s']:,.0f} examples/s)"
    )
    return params


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


_RUNTIME_SECTIONS = ("parallel", "checkpoint")  # how to run, not what: may change on resume
_RUN_OUTPUTS = ("metrics.jsonl", "edge_history.jsonl", "results.json", "architecture.json",
                "architecture.txt", "models", "checkpoints")  # fmt: skip


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


def check_baselines(cfg: Config, data: Splits) -> None:
    """A baseline the data cannot train (esm2 on 2 stages) fails before the search, not after."""
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
            sel = selection.select_architecture(
                spec, cfg.retrain, data.train, data.valid, ev["kept"],
                cfg.edge_search.select, cfg.eval_batch_size,
            )  # fmt: skip
            ev = {**ev, "kept": sel.pop("kept"), "selection": sel}
            _say(f"[search] validated selection: {sel['chosen']} ({time.perf_counter() - t0:.1f}s)")
        record = architecture.evidence_record(spec.edges, ev, stage_names, mode)
    else:
        record = architecture.searched_architecture(
            params, spec, cfg.derive_threshold, stage_names, mode
        )
    install_architecture(wd, record)
    text = architecture.render_architecture(record, len(cfg.model.hidden))
    if artifacts.is_writer():
        wd.path("architecture.txt").write_text(text)
    _say(text)
    return record


def install_architecture(wd: artifacts.Workdir, record: dict, stale: tuple[str, ...] = ()) -> None:
    """Writes architecture.json. If the earlier one kept other edges or operators, the model
    retrained from it (and the outputs named in `stale`) no longer match and are deleted."""
    previous = wd.path("architecture.json")
    with deferred("installing architecture.json"):  # stale outputs go with their record
        if previous.exists() and artifacts.is_writer():
            old = json.loads(previous.read_text())
            if (old.get("kept"), old.get("kept_ops")) != (record["kept"], record.get("kept_ops")):
                for path in (wd.path("models", AUTOHERI), wd.path("checkpoints", AUTOHERI)):
                    shutil.rmtree(path, ignore_errors=True)
                for name in stale:
                    wd.path(name).unlink(missing_ok=True)
        wd.write_json("architecture.json", record)


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


def format_table(results: dict) -> str:
    keys = results["metric_keys"]
    rows = [(name, m["test"]) for name, m in results["models"].items()]
    if results["oracle"] is not None:
        rows.append(("oracle (true probs)", results["oracle"]["test"]))
    fmt = lambda v: f"{'n/a':>11}" if v is None else f"{v:>11.4f}"
    columns = [(k, "auc", f"{k} AUC") for k in keys] + [(k, "nll", f"{k} NLL") for k in keys]
    lines = [f"test metrics ({results['data']['test']['rows']} impressions)"]
    lines += _table(rows, columns, fmt)
    if results["oracle"] is not None:  # the simulator's truth: the low-noise instrument
        everywhere = [k for k in keys if any("soft_auc_all" in test[k] for _, test in rows)]
        soft = [(k, "soft_auc", f"{k} sAUC") for k in keys]
        soft += [(k, "soft_auc_all", f"{k}* sAUC") for k in everywhere]
        soft += [(k, "excess_nll_all", f"{k}* xNLL") for k in everywhere]
        lines += ["", "against the true probabilities (sAUC: soft-label AUC; *: post-click "
                  "rate over every impression; xNLL: log-loss above the oracle's)"]  # fmt: skip
        lines += _table(rows, soft, fmt)
    if any("ece" in test[k] for _, test in rows for k in keys):  # results.json from before: none
        later = [k for k in keys if any("selection_gap" in test[k] for _, test in rows)]
        truth = results["oracle"] is not None
        flat = [  # selection_gap's means beside the key's other fields, for _table
            (name, {k: {**test[k], **(test[k].get("selection_gap") or {})} for k in keys})
            for name, test in rows
        ]
        calib = [(k, "ece", f"{k} ECE") for k in keys]
        calib += [(k, "pred_scored", f"{k} scored") for k in later]
        calib += [(k, "pred_all", f"{k} all") for k in later]
        calib += [(k, "mae_true_all", f"{k}* MAE") for k in later if truth]
        lines += [
            "",
            f"calibration (ECE: |mean pred - label rate| over {CALIBRATION_BINS} equal-mass bins; "
            "scored / all: mean predicted rate",
            " where the previous stage was reached / on every impression"
            + ("; *: MAE vs the true rate on every impression)" if truth else ")"),
        ]
        lines += _table(flat, calib, fmt)
    return "\n".join(lines)


def _table(rows, columns, fmt) -> list[str]:
    header = f"{'model':<22}" + "".join(f"{title:>11}" for _, _, title in columns)
    return [header] + [
        f"{name:<22}" + "".join(fmt(test[k].get(field)) for k, field, _ in columns)
        for name, test in rows
    ]


def run(cfg: Config, wd: artifacts.Workdir, progress: bool = True, fresh: bool = False) -> dict:
    cfg = with_store_options(cfg)  # the same config for all three steps (results.json shows it)
    search(cfg, wd, progress, fresh)
    retrain(cfg, wd, progress)
    return evaluate(cfg, wd)
