"""Frozen experiment configs: one nested dataclass tree, validated before any compute.

An experiment is a Python file in `experiments/configs/` with a `get_config() -> Config`.
`--set section.field=value` overrides are parsed against the field's declared type, and
every unknown key or wrong type raises `ConfigError` naming the key, so a typo costs
milliseconds, not a search. `edge_search` is one of the method configs (METHOD_CONFIGS), a
section tagged by its `method` that holds only that method's settings: a setting of another
method is refused naming the method it belongs to.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import json
import re
import traceback
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from autoheri_jax import workdir_format

# the data and model sections live beside what they set; callers may import them from here
from autoheri_jax.data.config import DATA_FORMATS, SOURCES, DataConfig  # noqa: F401
from autoheri_jax.method_config import (  # noqa: F401  (callers import them from here)
    ARCH_OPTIMIZERS,
    EVIDENCE_CRITERIA,
    GRADIENT_SEARCH,
    METHOD_CONFIGS,
    PAPER_SEARCH_RECIPE,
    SEARCH_METHODS,
    SELECT_CRITERIA,
    UNDECIDED_RULES,
    AblationSearch,
    EdgeSearch,
    GradientSearch,
    MaskedSearch,
    PaperSearch,
    arch_settings,
    method_fields,
    methods_with,
)
from autoheri_jax.model.config import FAMILIES, FAMILY_SETTINGS, ModelConfig  # noqa: F401
from autoheri_jax.model.edges import parse_edge
from autoheri_jax.model.variants import ARCH_VARIANTS, VARIANTS
from autoheri_jax.settings import ConfigError
from autoheri_jax.settings import check as _check
from autoheri_jax.settings import check_types as _check_types

OPTIMIZERS = ("adam", "adamw", "sgd", "adagrad")
EMBEDDING_OPTIMIZERS = ("adam", "adagrad")
LAUNCHERS = ("auto", "single", "mesh", "pmap")
DEVICE_RESIDENT = ("off", "on", "auto")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How one model's weights train: the search phase (`Config.search`), the retrain of the
    derived model and of every baseline. A supernet trains under a SupernetConfig, which
    the edge search's method (search/methods/) builds from this and its config."""

    epochs: int = 2  # passes over the training impressions
    # > 0: stop after this many steps if the epochs would run longer (a fixed step budget on
    # a big file: benchmarks/scale.py); 0 = the epochs decide
    max_steps: int = 0
    batch_size: int = 1024  # impressions per step
    optimizer: str = "adam"  # optimiser of the weights partition
    lr: float = 2e-3  # learning rate of the weights partition
    weight_decay: float = 0.0  # decoupled weight decay (adamw only)
    embedding_optimizer: str = "adam"  # embeddings partition: adam | adagrad
    embedding_lr: float = 0.0  # learning rate of the embeddings partition; 0 = same as lr
    sparse_embeddings: bool = True  # update only looked-up rows (adam becomes lazy Adam)
    # > 0 (sparse embeddings): a step gathers, pools and scatters only a batch's real bag
    # entries, in this fraction of its padded B x fields x max_bag_len slots (set it above the
    # data's fill: benchmarks/bag_step.py prints it); a batch with more takes the padded path,
    # with the same result. 0 = always the padded path
    bag_slots: float = 0.0
    grad_clip: float = 0.0  # global-norm clip of all gradients; 0 = off
    seed: int = 0  # weight init, dropout and shuffling seed
    log_every: int = 50  # steps between metric records (and non-finite checks)
    # > 0: early stopping (train/early_stopping.py): every log_every steps the weights are
    # scored on the validation loss (entire-space NLL summed over stages); after this many
    # checks in a row without a lower loss the run stops (a lane of a vmapped batch freezes)
    # and the best-scoring weights, not the last, are the result. 0 = off
    early_stop_patience: int = 0
    early_stop_rows: int = 20_000  # validation rows (the first ones) each check scores; 0 = all
    # training steps per jitted call (K): K > 1 runs K steps in one `jax.lax.scan` over K
    # stacked batches (train/multi_step.py); the host logs, checks for a non-finite loss,
    # checkpoints and sees signals only between dispatches, so log_every (and
    # checkpoint.every_steps) must be multiples of K. Same result as 1 (the step keys are
    # fold_in(rng, true step)); single, vmapped-seed and architecture-lane launchers only
    steps_per_dispatch: int = 1
    # the training split's columns on the device, each batch gathered there from the same
    # permuted indices (same batches as the host path): "on" (refused where it cannot be),
    # "auto" (on where supported and the columns fit a quarter of the device's memory), "off"
    device_resident: str = "off"

    def __post_init__(self):
        _check_types(self, "")
        _check(self.early_stop_patience >= 0, "early_stop_patience", "must be >= 0 (0 = off)")
        _check(self.early_stop_rows >= 0, "early_stop_rows", "must be >= 0 (0 = all rows)")
        _check(
            not self.early_stop_patience
            or (self.steps_per_dispatch == 1 and self.device_resident == "off"),
            "early_stop_patience",
            "runs one step per dispatch from host batches (a stopped lane freezes between "
            "steps): set steps_per_dispatch=1 and device_resident=off, or early_stop_patience=0",
        )
        for k in ("epochs", "batch_size", "log_every", "steps_per_dispatch"):
            _check(getattr(self, k) > 0, f"{k}", "must be > 0")
        _check(
            self.log_every % self.steps_per_dispatch == 0,
            "log_every",
            f"{self.log_every} must be a multiple of steps_per_dispatch "
            f"({self.steps_per_dispatch}): records and non-finite checks fall between dispatches",
        )
        _check(
            self.device_resident in DEVICE_RESIDENT, "device_resident", f"one of {DEVICE_RESIDENT}"
        )
        _check(self.optimizer in OPTIMIZERS, "optimizer", f"one of {OPTIMIZERS}")
        _check(
            self.embedding_optimizer in EMBEDDING_OPTIMIZERS,
            "embedding_optimizer",
            f"one of {EMBEDDING_OPTIMIZERS}",
        )
        _check(self.embedding_lr >= 0, "embedding_lr", "must be >= 0")
        _check(self.max_steps >= 0, "max_steps", "must be >= 0 (0 = the epochs decide)")
        _check(self.lr > 0, "lr", "must be > 0")
        _check(0 <= self.bag_slots <= 1, "bag_slots", "must lie in [0, 1]")
        for k in ("weight_decay", "grad_clip"):
            _check(getattr(self, k) >= 0, f"{k}", "must be >= 0")


@dataclasses.dataclass(frozen=True)
class ParallelConfig:
    # auto (mesh if >1 device) | single | mesh (jit over a device mesh, the batch split across
    # it; shard_map when shard_embeddings) | pmap
    launcher: str = "auto"
    num_devices: int = 0  # devices to use; 0 = all
    shard_embeddings: bool = False  # split the embedding table's rows across devices
    num_processes: int = 1  # multi-host: processes in the run (1 = no jax.distributed)
    process_id: int = -1  # multi-host: this process's id; -1 = from the environment
    coordinator: str = ""  # multi-host: host:port of process 0; "" = from the environment
    cpu_collectives: str = ""  # multi-process CPU runs: "gloo"

    def __post_init__(self):
        _check_types(self, "")
        _check(self.launcher in LAUNCHERS, "launcher", f"one of {LAUNCHERS}")
        _check(self.num_devices >= 0, "num_devices", "must be >= 0")
        _check(self.num_processes >= 1, "num_processes", "must be >= 1")
        _check(self.cpu_collectives in ("", "gloo", "mpi"), "cpu_collectives", "'', gloo or mpi")


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
    every_steps: int = 500  # save every this many steps (and at the end, and on SIGTERM/SIGINT)
    keep: int = 2  # latest checkpoints kept per model (plus the best by validation loss)
    keep_best: bool = True  # also keep the checkpoint with the lowest validation loss
    valid_rows: int = 20_000  # validation rows scored at each save (the "best" metric)
    async_save: bool = True  # write in the background while training goes on
    resume: bool = True  # continue from a workdir's checkpoints instead of starting over
    keep_after_finish: bool = False  # keep a model's checkpoints once its final params exist

    def __post_init__(self):
        _check_types(self, "")
        _check(self.every_steps > 0 and self.keep > 0, "every_steps", "every_steps, keep > 0")
        _check(self.valid_rows >= 0, "valid_rows", "must be >= 0")


# *_auc: validation AUC of that key; neg_valid_loss: minus the validation entire-space log-loss
# summed over stages (every impression counts, so candidates are told apart with less noise)
EVOLUTION_METRICS = ("cvr_auc", "ctcvr_auc", "ctr_auc", "atr_auc", "ctatr_auc", "neg_valid_loss")


@dataclasses.dataclass(frozen=True)
class EvolutionConfig:
    """Regularised (aging) evolution over edge masks: `autoheri evolve` (see evolution.py)."""

    population: int = 8  # P: masks alive at once; the first P are drawn uniformly at random
    sample: int = 3  # S: masks drawn from the population per tournament; the best is the parent
    cycles: int = 16  # C: children made after the initial population (each replaces the oldest)
    mutation_prob: float = 0.0  # chance to flip each edge of the parent (>= 1 flip); 0 = 1/edges
    budget_epochs: int = 1  # epochs each candidate trains from fresh weights (retrain settings)
    budget_steps: int = 0  # > 0: cap a candidate's steps by training on a prefix of train; 0 = off
    metric: str = "cvr_auc"  # validation score to maximise: one of EVOLUTION_METRICS
    seed: int = 0  # seed of the initial population, tournaments and mutations

    def __post_init__(self):
        _check_types(self, "")
        _check(self.population >= 1, "population", "must be >= 1")
        _check(1 <= self.sample <= self.population, "sample", "must lie in [1, population]")
        _check(self.cycles >= 0, "cycles", "must be >= 0")
        _check(0 <= self.mutation_prob <= 1, "mutation_prob", "must lie in [0, 1]")
        _check(self.budget_epochs >= 1, "budget_epochs", "must be >= 1")
        _check(self.budget_steps >= 0, "budget_steps", "must be >= 0")
        _check(self.metric in EVOLUTION_METRICS, "metric", f"one of {EVOLUTION_METRICS}")


def _foreign_setting(key: str, name: str, method: str) -> ConfigError:
    """The error for `key` (edge_search.<name>), a setting the chosen `method` lacks."""
    owners = methods_with(name)
    if not owners:
        own = list(method_fields(METHOD_CONFIGS[method]))
        near = _nearest(name, own, "edge_search.")
        return ConfigError(
            f"unknown config key {key!r}{near}; edge_search.method={method} has: "
            f"{own or 'no settings'}"
        )
    return ConfigError(
        f"{key}: a setting of edge_search.method={' / '.join(owners)}, not of "
        f"edge_search.method={method} (set edge_search.method={owners[0]} before it)"
    )


@dataclasses.dataclass(frozen=True)
class SupernetConfig(TrainConfig):
    """How the search phase trains its supernet (not a config-file section): the method's
    module (search/methods/) builds it from `Config.search` (the plain settings) and the
    method config. A gated supernet (gradient, paper) has `arch`, a masked one
    `edge_keep_prob`."""

    # the arch partition's settings (optimiser, warm-up, regularisers, bi-level, init) of a
    # gated supernet; None: no arch params
    arch: GradientSearch | None = None
    # > 0: a masked supernet's step: every edge is on with this probability, one draw per step
    # for the whole batch (train/step.step_edge_mask); 0 = the model's own gates
    edge_keep_prob: float = 0.0

    def __post_init__(self):
        super().__post_init__()
        _check(0 <= self.edge_keep_prob < 1, "edge_keep_prob", "must lie in [0, 1)")
        _check(
            self.arch is None or self.edge_keep_prob == 0,
            "edge_keep_prob",
            "a gated supernet (arch settings) takes no sampled masks",
        )


def supernet_config(train: TrainConfig, **method: Any) -> SupernetConfig:
    """`train`'s settings plus the method's (`arch=` a GradientSearch, or `edge_keep_prob=`)."""
    plain = {f.name: getattr(train, f.name) for f in dataclasses.fields(TrainConfig)}
    return SupernetConfig(**plain, **method)


def arch_of(cfg: TrainConfig) -> GradientSearch | None:
    """The arch partition's settings of a run (None: a plain TrainConfig or a masked one)."""
    return cfg.arch if isinstance(cfg, SupernetConfig) else None


def edge_keep_prob(cfg: TrainConfig) -> float:
    """A masked supernet's per-step edge probability; 0 = the model's own gates."""
    return cfg.edge_keep_prob if isinstance(cfg, SupernetConfig) else 0.0


def is_bilevel(cfg: TrainConfig) -> bool:
    """A first-order bi-level search step (its arch gradient from a validation batch)."""
    arch = arch_of(cfg)
    return arch is not None and arch.bilevel


@dataclasses.dataclass(frozen=True)
class Config:
    name: str = "default"  # experiment name, printed and written to results.json
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()  # the searched AutoHERI model
    search: TrainConfig = TrainConfig()  # the search phase's training (its supernet's weights)
    retrain: TrainConfig = TrainConfig()  # derived model and every baseline
    baselines: tuple[str, ...] = ("esmm",)  # models trained beside AutoHERI (model/variants.py)
    eval_batch_size: int = 8192  # impressions per evaluation step
    parallel: ParallelConfig = ParallelConfig()  # devices, launcher, hosts
    checkpoint: CheckpointConfig = CheckpointConfig()  # saving and resuming
    evolution: EvolutionConfig = EvolutionConfig()  # `autoheri evolve`: evolutionary search
    # how the one-shot search decides: one of METHOD_CONFIGS, by its `method`
    edge_search: EdgeSearch = MaskedSearch()

    def __post_init__(self):
        _check_types(self, "")
        _check(self.eval_batch_size > 0, "eval_batch_size", "must be > 0")
        for phase in ("search", "retrain"):  # a supernet's settings come from edge_search
            kind = type(getattr(self, phase)).__name__
            _check(type(getattr(self, phase)) is TrainConfig, phase, f"a TrainConfig, got {kind}")
        _check(self.model.edge_mode != "none", "model.edge_mode", "AutoHERI needs candidate edges")
        self._check_method()
        simulated = self.data.source == "simulator"
        for phase in ("search", "retrain"):
            bs = getattr(self, phase).batch_size
            ok = not simulated or bs <= self.data.num_train
            _check(ok, f"{phase}.batch_size", f"{bs} > data.num_train")
            k = getattr(self, phase).steps_per_dispatch
            _check(
                self.checkpoint.every_steps % k == 0,
                "checkpoint.every_steps",
                f"{self.checkpoint.every_steps} must be a multiple of {phase}.steps_per_dispatch "
                f"({k}): checkpoints are written between dispatches",
            )
        arch = arch_settings(self.edge_search)
        _check(
            not simulated
            or arch is None
            or not arch.bilevel
            or self.data.num_valid >= self.search.batch_size,
            "edge_search.bilevel",
            f"needs data.num_valid >= search.batch_size ({self.search.batch_size})",
        )

        for e in self.model.fixed_edges if simulated else ():  # files: checked on their stages
            dst = parse_edge(e.partition(":")[0]).dst_task
            _check(
                dst < self.data.num_stages,
                "model.fixed_edges",
                f"edge {e!r}: task {dst} but data.num_stages={self.data.num_stages}",
            )
        known = sorted({*VARIANTS, *ARCH_VARIANTS})
        for b in self.baselines:
            _check(b in known, "baselines", f"unknown model {b!r}; known: {known}")
        _check(
            not simulated or "esm2" not in self.baselines or self.data.num_stages == 3,
            "baselines",
            "esm2 needs a 3-stage funnel (click -> action -> purchase): data.num_stages=3",
        )
        self._check_family_settings()

    def _check_family_settings(self) -> None:
        """A baseline family's own setting (model/config.py, FAMILY_SETTINGS) moved off its
        default is refused by name when no model of the run is of a family that reads it."""
        used = {self.model.family} | {
            VARIANTS[b](self.model).family for b in self.baselines if b in VARIANTS
        }
        readers: dict[str, list[str]] = {}
        for name, fields in FAMILY_SETTINGS.items():
            for field in fields:
                readers.setdefault(field, []).append(name)
        defaults = ModelConfig()
        for field, families in readers.items():
            value = getattr(self.model, field)
            _check(
                value == getattr(defaults, field) or bool(used & set(families)),
                f"model.{field}",
                f"{value!r} is read only by {', '.join(families)}; the run's models are of the "
                f"families {', '.join(sorted(used))} (add a model of {families[0]} to baselines, "
                "or leave the setting unset)",
            )

    def _check_method(self) -> None:
        """A setting the chosen edge_search.method does not use is refused by name (where it
        could only be ignored). The method configs hold only their own settings; this checks
        the model's settings that only a gated search reads."""
        method = self.edge_search.method
        _check(
            arch_settings(self.edge_search) is not None or self.model.aggregation != "search",
            "model.aggregation",
            f"edge_search.method={method} decides edges only; an operator search "
            "(model.aggregation=search) needs edge_search.method=gradient or paper",
        )


# ----------------------------------------------------------------------------- (de)serialise


def to_dict(cfg: Any) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Checks `value` against the annotation `tp`, converting JSON lists to tuples."""
    origin = typing.get_origin(tp)
    if tp == EdgeSearch:
        return _edge_search_from(value, key)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a section (mapping), got {type(value).__name__}")
        return from_dict(tp, value, prefix=f"{key}.")
    if origin is tuple:
        args = typing.get_args(tp)
        if isinstance(value, str) or not isinstance(value, Sequence):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return tuple(_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
    if origin in (types.UnionType, typing.Union):
        raise ConfigError(f"{key}: union types are not supported in configs")
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float, str, bool) and (type(value) is not tp):
        raise ConfigError(f"{key}: expected {tp.__name__}, got {type(value).__name__} {value!r}")
    return value


def _edge_search_from(values: Any, key: str) -> EdgeSearch:
    """The method config a tagged section {"method": ..., its settings} names (method absent:
    masked); a setting of another method is refused by name."""
    if not isinstance(values, Mapping):
        raise ConfigError(f"{key}: expected a section (mapping), got {type(values).__name__}")
    method = values.get("method", "masked")
    if method not in METHOD_CONFIGS:
        raise ConfigError(f"{key}.method: one of {SEARCH_METHODS}, got {method!r}")
    cls = METHOD_CONFIGS[method]
    own = method_fields(cls)
    for k in values:
        if k != "method" and k not in own:
            raise _foreign_setting(f"{key}.{k}", k, method)
    return from_dict(cls, {k: v for k, v in values.items() if k != "method"}, prefix=f"{key}.")


def _closest(name: str, known: Sequence[str]) -> str | None:
    """The known name closest to a mistyped `name`, None when none is close: the one thing a
    flag library's message says that a bare refusal did not."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return close[0] if close else None


def _nearest(name: str, known: Sequence[str], prefix: str) -> str:
    """ " (did you mean 'PREFIX.X'?)" for `_closest`, "" when none is close."""
    close = _closest(name, known)
    return f" (did you mean '{prefix}{close}'?)" if close else ""


def _hint(key: str, part: str, known: Sequence[str], above: Sequence[str]) -> str:
    """The end of an unknown `--set` key's error: where the key moved, else the nearest name."""
    moved = _moved(key)
    if moved:
        return ")" + moved
    close = _closest(part, known)
    return f"; did you mean '{'.'.join([*above, close])}'?)" if close else ")"


# where a setting that left a section lives now (named in the unknown-key error)
MOVED = {
    **{f"search.{k}": f"edge_search.{k}" for k in method_fields(GradientSearch)},
    "derive_threshold": "edge_search.derive_threshold",
    "model.init_edge_logit": "edge_search.init_edge_logit",
    "model.edge_logit_noise": "edge_search.edge_logit_noise",
}


def _moved(key: str) -> str:
    """The " (now ...)" naming where a key the config no longer has lives, for its error."""
    new = MOVED.get(key)
    if new is None:
        return ""
    owners = methods_with(new.split(".")[-1])
    return f" (now {new}, a setting of edge_search.method={' / '.join(owners)})"


def from_dict(cls: type, values: Mapping[str, Any], prefix: str = "") -> Any:
    """Builds dataclass `cls` from a mapping; unknown keys and wrong types raise ConfigError.
    `edge_search` is a tagged section: {"method": <one of METHOD_CONFIGS>, its settings}."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    for key in values:
        if key not in names:
            raise ConfigError(
                f"unknown config key '{prefix}{key}'{_moved(prefix + key)}"
                f"{'' if _moved(prefix + key) else _nearest(key, names, prefix)}; "
                f"known: {sorted(names)}"
            )
    kwargs = {k: _coerce(v, hints[k], f"{prefix}{k}") for k, v in values.items()}
    try:
        return cls(**kwargs)
    except ConfigError as e:  # section validators name fields relative to their section
        raise ConfigError(f"{prefix}{e}") from None


def _expected_form(tp: Any) -> str:
    """How a --set value of type `tp` is written, for the error that rejects one."""
    if typing.get_origin(tp) is tuple:
        item = typing.get_args(tp)[0]
        example = "[64,32] or 64,32" if item is int else "[0.1,0.2] or 0.1,0.2"
        if item is str:
            example = '["0.0->1.1","0.1->1.2"] or 0.0->1.1,0.1->1.2'
        return f"a list of {item.__name__}, e.g. {example}"
    return {int: "an integer, e.g. 3", float: "a number, e.g. 0.5"}.get(tp, str(tp))


def _parse_literal(text: str, tp: Any, key: str) -> Any:
    """One --set value parsed against its field's type; any failure is a ConfigError naming the
    key, the text and the expected form (never a JSON traceback)."""
    if tp is str:
        return text
    if tp is bool:
        low = text.lower()
        if low not in ("true", "false", "1", "0"):
            raise ConfigError(f"--set {key}={text}: expected true or false")
        return low in ("true", "1")

    def refuse() -> ConfigError:
        return ConfigError(f"--set {key}={text}: cannot parse; expected {_expected_form(tp)}")

    if typing.get_origin(tp) is tuple:
        item = typing.get_args(tp)[0]
        inner = text[1:-1] if text.startswith("[") and text.endswith("]") else text
        if item is str:  # JSON strings, or bare comma-separated names (edges: 0.0->1.1)
            try:
                value = json.loads(text)
            except json.JSONDecodeError:
                value = [t.strip() for t in inner.split(",") if t.strip()]
            if not isinstance(value, list):
                value = [value]
            if not all(isinstance(v, str) for v in value):
                raise refuse()
            return value
        try:  # `--set model.hidden=64,32` as well as [64,32]
            value = [json.loads(t) for t in inner.split(",")] if inner.strip() else []
        except json.JSONDecodeError:
            raise refuse() from None
        if any(isinstance(v, (list, dict, str)) or v is None for v in value):
            raise refuse()
        return value
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        raise refuse() from None
    if isinstance(value, (list, dict)) or value is None:
        raise refuse()
    return value


def apply_overrides(cfg: Config, overrides: Sequence[str]) -> Config:
    """Applies `section.field=value` strings in order; the value is parsed against the field's
    type. `edge_search.method=M` switches the search to method M with M's defaults (the same
    method: nothing changes); `edge_search.<setting>` is parsed against the method chosen so
    far, and one of another method is refused by name."""
    as_dict = dataclasses.asdict(cfg)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value")
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        cls, node = Config, as_dict
        for depth, part in enumerate(parts):
            hints = typing.get_type_hints(cls)
            if part not in hints:
                if cls in METHOD_CONFIGS.values():
                    raise _foreign_setting(key.strip(), part, node["method"])
                where = ".".join(parts[:depth]) or "top level"
                raise ConfigError(
                    f"unknown config key {key!r} ({part!r} not in {where}"
                    f"{_hint(key.strip(), part, hints, parts[:depth])}"
                )
            tp = hints[part]
            if depth < len(parts) - 1:
                if tp == EdgeSearch:  # the section of the method chosen so far
                    cls, node = METHOD_CONFIGS[node[part]["method"]], node[part]
                    continue
                if not dataclasses.is_dataclass(tp):
                    raise ConfigError(f"unknown config key {key!r} ({part!r} is not a section)")
                cls, node = tp, node[part]
            elif dataclasses.is_dataclass(tp) or tp == EdgeSearch:
                raise ConfigError(f"{key}: is a section; set one of its fields")
            elif cls in METHOD_CONFIGS.values() and part == "method":
                method = text.strip()
                if method not in METHOD_CONFIGS:
                    raise ConfigError(f"--set {key}={text}: one of {SEARCH_METHODS}")
                if method != node["method"]:  # another method: its own defaults
                    node.clear()
                    node["method"] = method
            else:
                node[part] = _parse_literal(text.strip(), tp, key)
    return from_dict(Config, as_dict)


def split_overrides(text: str) -> list[str]:
    """ "a=1,b=[2,3]" -> ["a=1", "b=[2,3]"]: comma-separated `--set` overrides in one string
    (a comma inside [...] belongs to a list value)."""
    return [o for o in re.split(r",(?![^\[]*\])", text) if o]


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> Config:
    """Loads `get_config()` from a Python config file (or a saved config.json)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    if path.suffix == ".json":
        try:
            raw = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}: not valid JSON ({e})") from None
        if isinstance(raw, dict) and workdir_format.KEY in raw:  # a workdir's: versions must match
            raw = workdir_format.unstamp(raw, path)
        cfg = from_dict(Config, raw)
    else:
        cfg = call_python_file(path, "get_config", Config)
    return apply_overrides(cfg, overrides)


def call_python_file(path: Path, function: str, returns: type) -> Any:
    """Runs `function()` from the Python file `path` (a config or study file) and checks its
    result's type; every failure names the file."""
    spec = importlib.util.spec_from_file_location(f"autoheri_{function}_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
        if not hasattr(module, function):
            raise ConfigError(f"{path}: defines no {function}()")
        result = getattr(module, function)()
    except ConfigError:
        raise
    except Exception as e:  # a user's file: its syntax error, failed import or raise, by line
        raise ConfigError(_file_error(path, e)) from e
    if not isinstance(result, returns):
        kind = f"{returns.__module__}.{returns.__qualname__}"
        raise ConfigError(f"{path}: {function}() must return {kind}")
    return result


def _file_error(path: Path, e: Exception) -> str:
    """`FILE:LINE: Type: message` of an exception raised by running the Python file `path`:
    the line of `path` nearest the error (a syntax error's own line, else the traceback's last
    frame in the file), so the one line points where the file must change."""
    line = getattr(e, "lineno", None) if isinstance(e, SyntaxError) else None
    where = Path(e.filename) if isinstance(e, SyntaxError) and e.filename else path
    if line is None:
        mine = path.resolve()
        frames = [
            f for f in traceback.extract_tb(e.__traceback__) if Path(f.filename).resolve() == mine
        ]
        line = frames[-1].lineno if frames else None
    text = e.msg if isinstance(e, SyntaxError) else str(e)
    head = f"{where}:{line}" if line else f"{where}"
    return f"{head}: {type(e).__name__}: {text}".replace("\n", " ")


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(json.dumps(to_dict(cfg), indent=2) + "\n")
