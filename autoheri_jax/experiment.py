"""The AutoHERI workflow over one workdir: search -> derive -> retrain -> evaluate.

Each step is a function of (config, workdir) that reads what earlier steps wrote, so the CLI
can run them together (`autoheri run`) or one at a time over the same workdir. Each
architecture trains once: the models the search's architecture batch trained as its lanes
(`save_lane_models`) are saved by the search, and the retrain trains only the others.
"""

from __future__ import annotations

import shutil
import time

import jax
import numpy as np

from autoheri_jax import artifacts, phases
from autoheri_jax.artifacts import AUTOHERI, SEARCHED, SELECTION
from autoheri_jax.artifacts.lifecycle import (  # noqa: F401 (saved_config: the CLI's and tests')
    check_batch_sizes,
    install_architecture,
    prepare_workdir,
    saved_config,
    starting,
)
from autoheri_jax.artifacts.model_files import ModelLog, save_model, save_trained, trained_params
from autoheri_jax.config import (
    Config,
    ConfigError,
    ModelConfig,
    SupernetConfig,
    TrainConfig,
    arch_of,
    to_dict,
)
from autoheri_jax.data.dataset import CTRDataset
from autoheri_jax.data.sources import Splits, load_splits, with_store_options
from autoheri_jax.metrics import funnel_metrics, metric_keys
from autoheri_jax.model.build import build_spec
from autoheri_jax.model.network import init_params as network_init
from autoheri_jax.model.projection import lane_mask, project_params, same_initial_params
from autoheri_jax.model.spec import ModelSpec
from autoheri_jax.model.variants import ARCH_VARIANTS, VARIANTS, derived_model
from autoheri_jax.progress import say as _say
from autoheri_jax.report.tables import format_table
from autoheri_jax.search import architecture, selection
from autoheri_jax.search.methods import method_of
from autoheri_jax.search.records import ArchitectureRecord
from autoheri_jax.train.early_stopping import lane_stats
from autoheri_jax.train.fit import train_model
from autoheri_jax.train.lanes import unstack_tree
from autoheri_jax.train.loop import Resumable, fingerprint
from autoheri_jax.train.predict import predict_models
from autoheri_jax.train.step import abstract_state, count_params, init_keys
from autoheri_jax.workdir_format import read_json_file


@phases.timed("data")
def load_data(cfg: Config, wd: artifacts.Workdir | None = None, progress: bool = True) -> Splits:
    return load_splits(cfg.data, None if wd is None else wd.root, progress)


def spec_for(model: ModelConfig, data: CTRDataset, *, searched: bool = False) -> ModelSpec:
    """The model's static structure on this data (searched: every edge gated, as
    model.build.build_spec); a config the data cannot build (an edge into a stage the files
    lack) is a ConfigError, raised before anything trains."""
    try:
        return build_spec(
            model,
            data.vocab_sizes,
            data.num_dense,
            data.num_stages,
            data.bag_vocab_sizes,
            searched=searched,
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
    _say(
        f"[{phase}] {name}: {spec.num_edges} edges, params "
        f"{count_params(abstract_state(spec, tcfg).params)}"
    )

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
        state, stats = train_model(
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


def search_setup(cfg: Config) -> tuple[ModelConfig, SupernetConfig]:
    """The supernet the search trains and how: `Config.search`'s training settings plus the
    method's (search/methods/: a gated search's arch settings, a masked search's keep
    probability; the ablation search's plain model, which it never trains)."""
    return method_of(cfg).supernet(cfg)


def supernet_spec(cfg: Config, data: CTRDataset) -> tuple[ModelSpec, SupernetConfig]:
    """search_setup's supernet as a spec on `data`, with its TrainConfig: gated (arch
    params) exactly when the method trains an arch partition (gradient, paper)."""
    model, tcfg = search_setup(cfg)
    return spec_for(model, data, searched=arch_of(tcfg) is not None), tcfg


def prepare(
    cfg: Config, wd: artifacts.Workdir, progress: bool = True, fresh: bool = False
) -> tuple[Splits, ModelSpec, TrainConfig]:
    """The search's start: the data loaded and checked, the baselines and the supernet built
    on it (config.json is written once they validate). -> (data, supernet spec, its
    TrainConfig)."""
    with starting(cfg, wd, fresh):  # config.json once the data and the model validate
        data = load_data(cfg, wd, progress)
        rates = {k: round(v, 4) for k, v in data.train.summary()["positive_rate"].items()}
        _say(f"data: train {rates} over {data.train.num_rows} rows")
        check_baselines(cfg, data)
        spec, tcfg = supernet_spec(cfg, data.train)
    return data, spec, tcfg


def trains_supernet(cfg: Config) -> bool:
    """Whether the search trains a supernet (the ablation search trains its candidates)."""
    return method_of(cfg).trains_supernet


def derive(cfg: Config, wd: artifacts.Workdir, spec, params, data: Splits) -> ArchitectureRecord:
    """The record of this workdir's search: derived before (a resumed run), else derived now
    from the supernet's `params` (None for the ablation search)."""
    return derived_before(cfg, wd) or derive_architecture(cfg, wd, spec, params, data)


def search(
    cfg: Config, wd: artifacts.Workdir, progress: bool = True, fresh: bool = False
) -> ArchitectureRecord:
    cfg = with_store_options(cfg)  # config.json records the options a prepared store was made with
    data, spec, tcfg = prepare(cfg, wd, progress, fresh)
    params = None  # the ablation search trains its candidates, not a supernet
    if trains_supernet(cfg):
        params = train_and_save(cfg, wd, SEARCHED, "search", spec, tcfg, data, progress)
    return derive(cfg, wd, spec, params, data)


def read_architecture(wd: artifacts.Workdir) -> ArchitectureRecord:
    """architecture.json as its record (RecordError naming a key the file lacks or should not
    have)."""
    obj = wd.read_json("architecture.json", made_by="search")
    return ArchitectureRecord.from_json(obj, source=str(wd.path("architecture.json")))


def derived_before(cfg: Config, wd: artifacts.Workdir) -> ArchitectureRecord | None:
    """architecture.json when this workdir's search was derived already (a resumed run):
    written by this method after the supernet's params, with no candidates' batch left in
    training (a batch's checkpoints go only once its lanes are saved as models). Deriving
    again would retrain the selection's or ablation's batch, whose lanes may be the run's
    models. None: derive (again)."""
    arch = wd.path("architecture.json")
    if not arch.exists() or wd.path("checkpoints", SELECTION).exists():
        return None
    if trains_supernet(cfg):
        supernet = wd.path("models", SEARCHED, "train.json")  # retrained since: derive again
        if not supernet.exists() or supernet.stat().st_mtime_ns > arch.stat().st_mtime_ns:
            return None
    record = ArchitectureRecord.from_json(read_json_file(arch), source=str(arch))
    if record.method != cfg.edge_search.method:
        return None  # another method's record (an evolved one, say)
    _say(f"[search] architecture.json: derived before in {wd.root}; reusing it")
    text = wd.path("architecture.txt")
    if text.exists():
        _say(text.read_text())
    return record


def derive_architecture(
    cfg: Config, wd: artifacts.Workdir, spec, params, data: Splits
) -> ArchitectureRecord:
    """The searched params -> architecture.json / .txt (the kept edges and operators), by the
    method's module (search/methods/)."""
    record, lanes = method_of(cfg).derive(cfg, wd, spec, params, data)
    install_architecture(wd, record)
    text = architecture.render_architecture(record, len(cfg.model.hidden))
    if artifacts.is_writer():
        wd.path("architecture.txt").write_text(text)
    _say(text)
    if lanes is not None:  # before the batch's checkpoints go: a crash here derives again
        save_lane_models(cfg, wd, record, lanes, data)
    if artifacts.is_writer():  # the record holds the selection now: its batch is done
        shutil.rmtree(wd.path("checkpoints", SELECTION), ignore_errors=True)
    return record


def lane_reuse_blocked(cfg: Config, spec: ModelSpec) -> str | None:
    """Why a lane of the candidates' batch would not be the model the retrain trains (None:
    nothing stops it). A lane trains on one device and one process; the retrain of `spec`
    under cfg.parallel is the same training unless it draws dropout per device."""
    if jax.process_count() > 1:
        return "a multi-process run (each process feeds its own rows to the batch)"
    pc = cfg.parallel
    devices = 1 if pc.launcher == "single" else pc.num_devices or len(jax.devices())
    if spec.model.dropout > 0 and devices > 1:
        return f"dropout on {devices} devices draws a mask per device"
    return None


def save_lane_models(
    cfg: Config,
    wd: artifacts.Workdir,
    record: ArchitectureRecord,
    lanes: selection.LaneBatch,
    data: Splits,
) -> dict[str, str]:
    """Saves, as models/<name>, every model of the retrain step (`model_configs`) that is a
    lane of the candidates' batch: the same model but for edges the lane's mask switches
    off (model/projection.py), trained with the retrain's TrainConfig (seed, budget,
    optimiser; the batch's data order is the retrain's, StepBatchSource of that seed) from
    the same initial weights (checked bitwise here). The retrain then finds them trained
    and trains only the rest. -> {model: lane}."""
    if lanes.tcfg != cfg.retrain:
        return {}
    k_init, _ = init_keys(cfg.retrain.seed)
    saved, src_init = {}, None
    for name, model in model_configs(cfg, record).items():
        dst = spec_for(model, data.train)
        mask = lane_mask(lanes.spec, dst)
        match = [] if mask is None else [a for a, m in enumerate(lanes.masks) if (m == mask).all()]
        if not match:
            continue  # not in the batch: the retrain trains it
        if src_init is None:
            src_init = network_init(k_init, lanes.spec)
        why = lane_reuse_blocked(cfg, dst)
        if why is None and not same_initial_params(lanes.spec, dst, k_init, src_init):
            why = "its initial weights are not the lane's"
        if why is not None:
            _say(
                f"[search] {name}: is lane {lanes.names[match[0]]!r} of the {lanes.batch} "
                f"batch, but {why}: the retrain trains it"
            )
            continue
        a = match[0]
        params = project_params(lanes.spec, unstack_tree(lanes.params, a), dst)
        source = {"training": lanes.batch, "lane": lanes.names[a], "lanes": lanes.names}
        save_model(cfg, wd, name, "search", dst, params, lane_stats(lanes.stats, a), source)
        saved[name] = lanes.names[a]
    return saved


def model_configs(cfg: Config, record: ArchitectureRecord) -> dict[str, ModelConfig]:
    """Every model the retrain step trains: the derived AutoHERI model, then the baselines."""
    kept = architecture.kept_edges(record)
    models = {AUTOHERI: derived_model(cfg.model, kept, architecture.kept_ops(record))}
    for name in cfg.baselines:
        if name in ARCH_VARIANTS:
            if not record.candidates:
                raise ConfigError(
                    f"baseline {name!r} needs the search's candidate edges; architecture.json "
                    "has none (rerun `autoheri search`)"
                )
            models[name] = ARCH_VARIANTS[name](cfg.model, record.candidate_edges(), kept)
        else:
            models[name] = VARIANTS[name](cfg.model)
    return models


def checkpoint_extra(name: str, record: ArchitectureRecord) -> dict:
    """What a retrained model's checkpoints record beyond the config: the derived model's
    kept edges."""
    return {"architecture": list(record.kept)} if name == AUTOHERI else {}


def retrain(cfg: Config, wd: artifacts.Workdir, progress: bool = True) -> None:
    record = read_architecture(wd)
    data = load_data(cfg, wd, progress)
    for name, model in model_configs(cfg, record).items():
        spec = spec_for(model, data.train)
        extra = checkpoint_extra(name, record)
        train_and_save(cfg, wd, name, "retrain", spec, cfg.retrain, data, progress, extra)


@phases.timed("evaluate")
def evaluate(cfg: Config, wd: artifacts.Workdir) -> dict:
    record = read_architecture(wd)
    data = load_data(cfg, wd, progress=False)
    test, stages = data.test, data.test.stage_names
    loaded = {}
    for name, model in model_configs(cfg, record).items():
        spec = spec_for(model, test)
        abstract = abstract_state(spec, cfg.retrain).params
        loaded[name] = (model, spec, wd.load_params(name, abstract, made_by="retrain"))
    t0 = time.perf_counter()  # one pass over the test split scores every model
    predictions = predict_models([(s, p) for _, s, p in loaded.values()], test, cfg.eval_batch_size)
    share = (time.perf_counter() - t0) / max(len(loaded), 1)  # each model's part of the pass
    models = {}
    for (name, (model, spec, _)), (cond, entire) in zip(loaded.items(), predictions, strict=True):
        t0 = time.perf_counter()
        train_json = wd.read_json(f"models/{name}/train.json", made_by="retrain")
        models[name] = {
            "test": funnel_metrics(test.labels, cond, entire, stages, test.true_probs),
            "edges": list(model.fixed_edges)
            if model.edge_mode == "fixed"
            else [e.name for e in spec.edges],
            "train": train_json,
            "source": train_json.pop("source"),  # which training made the params
            "eval_seconds": share + time.perf_counter() - t0,
        }
    oracle = None
    if test.true_probs is not None:
        entire = np.cumprod(test.true_probs, axis=1)
        truth = test.true_probs
        oracle = {"test": funnel_metrics(test.labels, truth, entire, stages, truth)}
    results = {  # Workdir.write_json adds the format version (workdir_format.py)
        "name": cfg.name,
        "metric_keys": [k for k, _, _ in metric_keys(stages)],
        "data": {"train": data.train.summary(), "test": test.summary()},
        "models": models,
        "oracle": oracle,
        "architecture": record.to_json(),
        "config": to_dict(cfg),
        "jax": {"version": jax.__version__, "backend": jax.default_backend()},
    }
    wd.write_json("results.json", results)
    _say(format_table(results))
    lanes = {n: m["source"] for n, m in models.items() if m["source"].get("lane") is not None}
    if lanes:
        said = ", ".join(f"{n} = {s['training']} lane {s['lane']!r}" for n, s in lanes.items())
        _say(f"trained once, in the search's architecture batch (not retrained): {said}")
    return results


def run(cfg: Config, wd: artifacts.Workdir, progress: bool = True, fresh: bool = False) -> dict:
    cfg = with_store_options(cfg)  # the same config for all three steps (results.json shows it)
    search(cfg, wd, progress, fresh)
    retrain(cfg, wd, progress)
    return evaluate(cfg, wd)
