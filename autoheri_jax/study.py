"""Multi-seed studies: every arm x seed as a full run, then mean +- std and paired t-tests.

A study file (experiments/studies/*.py) defines `get_study() -> Study`: a base config, named
arms (each a list of `--set`-style overrides applied to the base) and a number of seeds.
`run_study` runs every arm x seed as a complete `autoheri run` (or, for an arm whose method is
"evolution", `autoheri evolve` + `retrain` + `evaluate`) in its own workdir,

  <workdir>/<arm>/seed<k>/     seed k: search.seed, retrain.seed, evolution.seed (and the
                               random_mask baseline's model.random_seed) = base + k, the data
                               fixed (the spread is that of training alone)
  <workdir>/<arm>/dseed<k>/    seed mode "data": data.seed = base + k as well (the spread
                               includes a fresh draw of the simulated data)

then reads every results.json and writes <workdir>/study.json and study.md: per arm and model
the mean and sample std over seeds of each metric's test AUC, and the paired comparison of
each model with `compare_to` trained in the same run (the same data, seed and test rows):
mean difference, its std and the paired t statistic with K-1 degrees of freedom and its
two-sided p-value. A run whose results.json exists is not run again, so a study resumes where
it stopped (an unfinished run resumes from its own checkpoints), and more seeds can be added
later by raising `--seeds`.

The Student t quantiles and tail probabilities are scipy.stats'.
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from autoheri_jax import phases
from autoheri_jax.config import (
    Config,
    ConfigError,
    MaskedSearch,
    apply_overrides,
    call_python_file,
    to_dict,
)
from autoheri_jax.progress import say as _say
from autoheri_jax.report.tables import column_label
from autoheri_jax.workdir_format import read_json_file

METHODS = ("oneshot", "evolution")  # how an arm finds its architecture
SEED_MODES = {"model": "seed", "data": "dseed"}  # seed mode -> run-directory prefix
_ARM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
STUDY_JSON, STUDY_MD, RUN_JSON = "study.json", "study.md", "study_run.json"
# results.json fields a study on simulated data reports beside the sampled-label AUC: scores
# against the true probabilities, free of label noise (see metrics.py)
PRECISE_FIELDS = ("soft_auc", "soft_auc_all", "excess_nll_all")


# --------------------------------------------------------------------------- t distribution


def t_two_sided_p(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t with `df` degrees of freedom."""
    if df <= 0:
        raise ValueError(f"df must be > 0, got {df}")
    return float(2.0 * stats.t.sf(abs(t), df)) if not math.isnan(t) else math.nan


def t_quantile(q: float, df: float) -> float:
    """The q-quantile of Student's t with `df` degrees of freedom."""
    return float(stats.t.ppf(q, df))


CONFIDENCE = 0.95  # two-sided confidence of every interval a study reports
POWER = 0.8  # power at which a study's minimum detectable difference is stated


def paired_test(a: Sequence[float], b: Sequence[float]) -> dict:
    """Paired t-test of a - b: n, mean and sample std of the differences, t, df, p, the 95%
    confidence interval of the mean difference (ci_lo, ci_hi) and `mde`, the smallest true
    difference this many pairs with this spread detect at two-sided 5% with 80% power,
    (t_{0.975, df} + t_{0.8, df}) x std / sqrt(n)."""
    diffs = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    n = len(diffs)
    out: dict[str, Any] = {
        "n": n,
        "mean_diff": None,
        "std_diff": None,
        "t": None,
        "df": None,
        "p": None,
        "ci_lo": None,
        "ci_hi": None,
        "mde": None,
    }
    if n == 0:
        return out
    out["mean_diff"] = float(diffs.mean())
    if n < 2:
        return out
    sd = float(diffs.std(ddof=1))
    mean = out["mean_diff"]
    if sd == 0.0:
        t = 0.0 if mean == 0.0 else math.copysign(math.inf, mean)
    else:
        t = mean / (sd / math.sqrt(n))
    out.update(std_diff=sd, t=t, df=n - 1, p=t_two_sided_p(t, n - 1))
    se = sd / math.sqrt(n)
    half = t_quantile(0.5 + CONFIDENCE / 2, n - 1) * se
    out.update(ci_lo=mean - half, ci_hi=mean + half)
    out["mde"] = (t_quantile(0.5 + CONFIDENCE / 2, n - 1) + t_quantile(POWER, n - 1)) * se
    return out


def mean_pairwise_jaccard(sets: Sequence[Sequence[str]]) -> float | None:
    """Mean Jaccard similarity |A & B| / |A | B| over every pair of sets (1 for two empty
    sets); None below two sets. 1 = every seed kept the same edges."""
    sets = [set(x) for x in sets]
    scores = [
        len(a & b) / len(a | b) if a | b else 1.0 for i, a in enumerate(sets) for b in sets[i + 1 :]
    ]
    return float(np.mean(scores)) if scores else None


def mean_std(values: Sequence[float]) -> dict:
    """n, mean and sample std (None below two values)."""
    v = np.asarray([x for x in values if x is not None], np.float64)
    return {
        "n": len(v),
        "mean": float(v.mean()) if len(v) else None,
        "std": float(v.std(ddof=1)) if len(v) > 1 else None,
    }


# ----------------------------------------------------------------------------- definition


@dataclasses.dataclass(frozen=True)
class Study:
    name: str  # printed and written to study.json
    base: Config  # the config every arm starts from
    arms: Mapping[str, Sequence[str]]  # arm -> `--set` style overrides of the base config
    # runs per arm (seeds first_seed .. first_seed + seeds - 1); `--seeds` overrides
    seeds: int = 5
    # the first seed: 0-99 are tuning seeds (defaults may be chosen on their validation
    # metrics), 1000+ evaluation seeds, run once after the defaults are frozen
    first_seed: int = 0
    compare_to: str = "esmm"  # model of the same run every other model is paired with
    keys: tuple[str, ...] = ()  # metric keys reported; () = every key of results.json
    # per key, the results.json fields reported besides the sampled-label AUC (columns
    # "<key>.<field>"; fields a run lacks, e.g. soft_auc on real data, are left out)
    fields: tuple[str, ...] = ("soft_auc", "soft_auc_all")
    # (model a, model b) pairs of the same run compared seed by seed besides compare_to
    model_pairs: tuple[tuple[str, str], ...] = ()
    methods: Mapping[str, str] = dataclasses.field(default_factory=dict)  # arm -> METHODS
    seed_modes: tuple[str, ...] = ("model",)  # "model": data fixed; "data": data.seed too
    arm_pairs: tuple[tuple[str, str], ...] = ()  # (a, b): pair_model of arm a vs arm b
    pair_model: str = "autoheri"  # the model compared across arm_pairs
    description: str = ""  # one line for study.md

    def __post_init__(self):
        def need(cond: bool, key: str, msg: str) -> None:
            if not cond:
                raise ConfigError(f"study {self.name!r}: {key}: {msg}")

        need(isinstance(self.base, Config), "base", "must be an autoheri_jax.config.Config")
        need(len(self.arms) > 0, "arms", "needs at least one arm")
        for arm, overrides in self.arms.items():
            need(bool(_ARM_NAME.match(arm)), "arms", f"{arm!r} is not a usable directory name")
            ok = not isinstance(overrides, str) and all(isinstance(o, str) for o in overrides)
            need(ok, f"arms[{arm!r}]", "must be a list of 'key=value' strings")
        need(isinstance(self.seeds, int) and self.seeds >= 1, "seeds", "must be an int >= 1")
        ok = isinstance(self.first_seed, int) and self.first_seed >= 0
        need(ok, "first_seed", "must be an int >= 0")
        for arm, method in self.methods.items():
            need(arm in self.arms, "methods", f"unknown arm {arm!r}")
            need(method in METHODS, "methods", f"{arm}: one of {METHODS}, got {method!r}")
        modes = self.seed_modes
        need(len(modes) > 0 and len(set(modes)) == len(modes), "seed_modes", "distinct, >= 1")
        need(all(m in SEED_MODES for m in modes), "seed_modes", f"each one of {list(SEED_MODES)}")
        for a, b in self.arm_pairs:
            need(a in self.arms and b in self.arms and a != b, "arm_pairs", f"bad pair {(a, b)}")
        for pair in self.model_pairs:
            need(len(pair) == 2 and pair[0] != pair[1], "model_pairs", f"bad pair {pair!r}")
        need(not isinstance(self.fields, str), "fields", "must be a tuple of field names")

    def seed_range(self, seeds: int) -> range:
        """The seeds of `seeds` runs per arm."""
        return range(self.first_seed, self.first_seed + seeds)

    def method(self, arm: str) -> str:
        return self.methods.get(arm, "oneshot")

    def definition(self) -> dict:
        """What fixes every run's config: a workdir holds the runs of one definition only."""
        out = {
            "base": to_dict(self.base),
            "arms": {a: list(o) for a, o in self.arms.items()},
            "methods": {a: self.method(a) for a in self.arms},
        }
        if self.first_seed:  # other seeds are other runs (0 keeps older workdirs valid)
            out["first_seed"] = self.first_seed
        return out


def method_arms(world: Sequence[str], methods: Sequence[str] = ("masked", "paper", "ablation")):
    """{method: overrides}: one arm per edge_search.method over the world's `--set` overrides
    (the default method's arm adds nothing)."""
    return {m: [*world] if m == "masked" else [*world, f"edge_search.method={m}"] for m in methods}


def load_study(path: str | Path) -> Study:
    """`get_study()` from a study file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"study file not found: {path}")
    return call_python_file(path, "get_study", Study)


def with_base_overrides(study: Study, overrides: Sequence[str]) -> Study:
    """The study with `--set` overrides applied to its base config (so to every arm)."""
    if not overrides:
        return study
    return dataclasses.replace(study, base=apply_overrides(study.base, overrides))


def arm_config(study: Study, arm: str, seed: int, mode: str = "model") -> Config:
    """The config of one run: base + the arm's overrides, with seed `seed` applied."""
    try:
        cfg = apply_overrides(study.base, list(study.arms[arm]))
    except ConfigError as e:
        raise ConfigError(f"study {study.name!r}, arm {arm!r}: {e}") from None
    r = dataclasses.replace
    cfg = r(
        cfg,
        name=f"{study.name}.{arm}.{SEED_MODES[mode]}{seed}",
        search=r(cfg.search, seed=cfg.search.seed + seed),
        retrain=r(cfg.retrain, seed=cfg.retrain.seed + seed),
        evolution=r(cfg.evolution, seed=cfg.evolution.seed + seed),
    )
    if isinstance(cfg.edge_search, MaskedSearch):
        # the evidence's context masks too: a fixed seed would judge every run on the same 8
        cfg = r(cfg, edge_search=r(cfg.edge_search, seed=cfg.edge_search.seed + seed))
    # the random_mask baseline draws anew per seed
    cfg = r(cfg, model=r(cfg.model, random_seed=cfg.model.random_seed + seed))
    if mode == "data":
        cfg = r(cfg, data=r(cfg.data, seed=cfg.data.seed + seed))
    models = {"autoheri", *cfg.baselines}
    if study.compare_to not in models:
        raise ConfigError(
            f"study {study.name!r}, arm {arm!r}: compare_to {study.compare_to!r} is not trained "
            f"(models: {sorted(models)}); add it to baselines"
        )
    return cfg


def run_dir(workdir: Path, arm: str, seed: int, mode: str = "model") -> Path:
    return Path(workdir) / arm / f"{SEED_MODES[mode]}{seed}"


# ----------------------------------------------------------------------------------- running


def run_one(cfg: Config, directory: Path, method: str, progress: bool = False) -> None:
    """One complete run: search (one-shot or evolution), retrain, evaluate."""
    from autoheri_jax import experiment
    from autoheri_jax.artifacts import Workdir
    from autoheri_jax.data.sources import with_store_options

    cfg = with_store_options(cfg)  # evolve, retrain and evaluate record the store's own options
    wd = Workdir(directory)
    if method == "evolution":
        from autoheri_jax.evolution_run import evolve

        evolve(cfg, wd, progress)
        experiment.retrain(cfg, wd, progress)
        experiment.evaluate(cfg, wd)
    else:
        experiment.run(cfg, wd, progress)


def _check_definition(study: Study, workdir: Path) -> None:
    path = workdir / STUDY_JSON
    if not path.exists():
        return
    old = read_json_file(path).get("definition")
    new = study.definition()
    if old is not None and old != new:
        keys = sorted(k for k in new if old.get(k) != new[k])
        raise ConfigError(
            f"{workdir} holds study runs of another definition (differing: {keys}); "
            "use another --workdir, or delete it to start over"
        )


def run_study(
    study: Study,
    workdir: str | Path,
    *,
    seeds: int | None = None,
    modes: Sequence[str] | None = None,
    progress: bool = False,
    vmap_seeds: bool = False,
) -> dict:
    """Runs every missing arm x seed (x seed mode), then writes and prints the summary.

    vmap_seeds: an arm's missing seeds run together (seed_runs.py: each model's seeds in one
    vmapped step), arm by arm; evolution arms still run seed by seed. Results equal the
    seed-by-seed runs within float rounding."""
    from autoheri_jax.artifacts import Workdir

    workdir = Path(workdir).resolve()
    seeds = study.seeds if seeds is None else seeds
    if seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {seeds}")
    modes = tuple(modes or study.seed_modes)
    for m in modes:
        if m not in SEED_MODES:
            raise ConfigError(f"seed mode {m!r}: one of {list(SEED_MODES)}")
    plan = [
        (mode, k, arm, arm_config(study, arm, k, mode))  # every config checked before compute
        for mode in modes
        for k in study.seed_range(seeds)  # seed-major: a stopped study has every arm at equal seeds
        for arm in study.arms
    ]
    _check_definition(study, workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    ran, skipped = [], []
    t_study = time.perf_counter()
    if vmap_seeds:
        plan = _run_vmapped_arms(study, workdir, plan, seeds, modes, progress, ran)
    for i, (mode, k, arm, cfg) in enumerate(plan):
        directory = run_dir(workdir, arm, k, mode)
        label = f"{arm}/{directory.name}"
        if (directory / "results.json").exists():
            skipped.append(label)
            continue
        _say(f"[study] {study.name}: run {i + 1}/{len(plan)}: {label} ({study.method(arm)})")
        t0 = time.perf_counter()
        with phases.clock() as phase_seconds:
            run_one(cfg, directory, study.method(arm), progress)
        seconds = time.perf_counter() - t0
        record = {
            "arm": arm,
            "seed": k,
            "mode": mode,
            "method": study.method(arm),
            "seconds": seconds,
            "phases": phase_seconds(),
        }
        Workdir(directory).write_json(RUN_JSON, record)
        ran.append(label)
        write_summary(study, workdir, seeds, modes)  # partial tables while the study goes on
    summary = write_summary(study, workdir, seeds, modes)
    summary["ran"], summary["skipped"] = ran, skipped
    _say(
        f"[study] {study.name}: {len(ran)} runs done now, {len(skipped)} found done, "
        f"{time.perf_counter() - t_study:.1f}s"
    )
    _say(render_markdown(summary))
    return summary


def _run_vmapped_arms(study, workdir, plan, seeds, modes, progress, ran) -> list:
    """Runs the missing one-shot runs of `plan` arm by arm, each arm's seeds vmapped
    together; -> the rest of the plan (done runs, evolution arms) for the seed-by-seed loop."""
    from autoheri_jax.artifacts import Workdir
    from autoheri_jax.seed_runs import run_seeds

    rest, groups = [], {}
    for entry in plan:
        mode, k, arm, _ = entry
        done = (run_dir(workdir, arm, k, mode) / "results.json").exists()
        if done or study.method(arm) != "oneshot":
            rest.append(entry)
        else:
            groups.setdefault((mode, arm), []).append(entry)
    for (mode, arm), entries in groups.items():
        dirs = [run_dir(workdir, arm, k, mode) for _, k, _, _ in entries]
        _say(f"[study] {study.name}: {arm}: seeds {[k for _, k, _, _ in entries]} vmapped")
        t0 = time.perf_counter()
        with phases.clock() as phase_seconds:
            run_seeds([cfg for *_, cfg in entries], [Workdir(d) for d in dirs], progress)
        seconds = time.perf_counter() - t0
        share = {k: v / len(entries) for k, v in phase_seconds().items()}
        for (_, k, _, _), directory in zip(entries, dirs, strict=True):
            record = {
                "arm": arm,
                "seed": k,
                "mode": mode,
                "method": "oneshot",
                "seconds": seconds / len(entries),
                "vmapped_seeds": len(entries),
                "group_seconds": seconds,
                "phases": share,
            }
            Workdir(directory).write_json(RUN_JSON, record)
            ran.append(f"{arm}/{directory.name}")
        write_summary(study, workdir, seeds, modes)
    return rest


# ------------------------------------------------------------------------------- collecting


def collect_run(directory: Path, method: str = "oneshot") -> dict | None:
    """Test AUCs per model (and the oracle) and the search cost of one finished run."""
    from autoheri_jax.artifacts import Workdir
    from autoheri_jax.evolution_run import oneshot_cost

    path = Path(directory) / "results.json"
    if not path.exists():
        return None
    res = read_json_file(path)
    tests = {name: m["test"] for name, m in res["models"].items()}
    if res.get("oracle"):
        tests["oracle"] = res["oracle"]["test"]
    auc = {name: _columns(test) for name, test in tests.items()}
    cost: dict[str, Any] = {"method": method, "steps": None, "seconds": None, "candidates": None}
    evo = Path(directory) / "evolution.json"
    oneshot = oneshot_cost(Workdir(directory))
    if method == "evolution" and evo.exists():
        c = read_json_file(evo)["cost"]
        cost.update(steps=c["train_steps"], seconds=c["seconds"], candidates=c["candidates"])
    elif oneshot is not None:
        cost.update(steps=oneshot["steps"], seconds=oneshot["seconds"], candidates=1)
    run = Path(directory) / RUN_JSON
    timing = read_json_file(run) if run.exists() else {}
    cost["run_seconds"] = timing.get("seconds")
    cost["phases"] = timing.get("phases")  # absent in runs timed before phases were
    return {
        "keys": res["metric_keys"],
        "auc": auc,
        "cost": cost,
        "kept": res["architecture"]["kept"],
    }


def _columns(test: Mapping[str, Mapping[str, Any]]) -> dict[str, float | None]:
    """One results.json "test" block -> {column: value}: "<key>" is the sampled-label AUC,
    "<key>.<field>" any other numeric field (soft_auc, excess_nll, ...)."""
    out: dict[str, float | None] = {}
    for key, fields in test.items():
        out[key] = fields.get("auc")
        for name, value in fields.items():
            numeric = value is None or (
                isinstance(value, int | float) and not isinstance(value, bool)
            )
            if name not in ("auc", "rows", "positives") and numeric:  # not bins, not gaps
                out[f"{key}.{name}"] = value
    return out


def _paired(pairs) -> dict:
    """paired_test over the (a, b) pairs where both values exist."""
    pairs = [(x, y) for x, y in pairs if x is not None and y is not None]
    return paired_test([x for x, _ in pairs], [y for _, y in pairs])


def _paired_models(runs, a: str, b: str, key: str) -> dict:
    """paired_test of model a vs model b on column `key` over the runs holding both."""
    return _paired(
        (r["auc"][a].get(key), r["auc"][b].get(key))
        for r in runs
        if a in r["auc"] and b in r["auc"]
    )


def summarize(
    study: Study, runs: Mapping[tuple[str, str, int], dict], seeds: int, modes: Sequence[str]
) -> dict:
    """runs[(mode, arm, seed)] = collect_run(...) -> tables of study.json."""
    base_keys = list(study.keys)
    if not base_keys:  # every key any run reports, in results.json order
        for r in runs.values():
            base_keys += [k for k in r["keys"] if k not in base_keys]
    present = {c for r in runs.values() for values in r["auc"].values() for c in values}
    keys = list(base_keys)  # columns: the sampled AUC of each key, then the asked fields
    keys += [f"{k}.{f}" for f in study.fields for k in base_keys if f"{k}.{f}" in present]
    out: dict[str, Any] = {
        "name": study.name,
        "description": study.description,
        "seeds": seeds,
        "compare_to": study.compare_to,
        "keys": keys,
        "modes": {},
    }
    for mode in modes:
        arms: dict[str, Any] = {}
        for arm in study.arms:
            got = {
                k: runs[(mode, arm, k)] for k in study.seed_range(seeds) if (mode, arm, k) in runs
            }
            models: list[str] = []
            for r in got.values():
                models += [m for m in r["auc"] if m not in models]
            table = {
                m: {
                    key: mean_std([r["auc"][m].get(key) for r in got.values() if m in r["auc"]])
                    for key in keys
                }
                for m in models
            }
            paired = {
                m: {key: _paired_models(got.values(), m, study.compare_to, key) for key in keys}
                for m in models
                if m not in (study.compare_to, "oracle")
            }
            costs = [r["cost"] for r in got.values()]
            cost = {
                f: mean_std([c[f] for c in costs])["mean"]
                for f in ("steps", "seconds", "candidates", "run_seconds")
            }
            cost["method"] = study.method(arm)
            timed = [c["phases"] for c in costs if c.get("phases")]
            cost["phases"] = (
                {k: float(np.mean([t.get(k, 0.0) for t in timed])) for k in phases.PHASES}
                if timed
                else None
            )
            kept = [len(r["kept"]) for r in got.values()]
            between = {
                f"{ma} − {mb}": {key: _paired_models(got.values(), ma, mb, key) for key in keys}
                for ma, mb in study.model_pairs
            }
            counts: dict[str, int] = {}
            for r in got.values():
                for e in r["kept"]:
                    counts[e] = counts.get(e, 0) + 1
            arms[arm] = {
                "seeds_done": sorted(got),
                "models": table,
                "paired": paired,
                "model_pairs": between,
                "cost": cost,
                "kept_edges": mean_std(kept),
                "kept_jaccard": mean_pairwise_jaccard([r["kept"] for r in got.values()]),
                "kept_frequency": {e: c / len(got) for e, c in sorted(counts.items())}
                if got
                else {},
            }
        pairs_out = []
        for a, b in study.arm_pairs:
            common = [
                k
                for k in study.seed_range(seeds)
                if (mode, a, k) in runs
                and (mode, b, k) in runs
                and study.pair_model in runs[(mode, a, k)]["auc"]
                and study.pair_model in runs[(mode, b, k)]["auc"]
            ]
            m = study.pair_model
            tests = {
                key: _paired(
                    (runs[(mode, a, k)]["auc"][m].get(key), runs[(mode, b, k)]["auc"][m].get(key))
                    for k in common
                )
                for key in keys
            }
            pairs_out.append({"a": a, "b": b, "model": study.pair_model, "tests": tests})
        out["modes"][mode] = {"arms": arms, "arm_pairs": pairs_out}
    return out


def write_summary(study: Study, workdir: Path, seeds: int, modes: Sequence[str]) -> dict:
    from autoheri_jax.artifacts import Workdir

    runs = {}
    for mode in modes:
        for arm in study.arms:
            for k in study.seed_range(seeds):
                r = collect_run(run_dir(workdir, arm, k, mode), study.method(arm))
                if r is not None:
                    runs[(mode, arm, k)] = r
    summary = summarize(study, runs, seeds, modes)
    summary["definition"] = study.definition()
    Workdir(workdir).write_json(STUDY_JSON, summary)
    (workdir / STUDY_MD).write_text(render_markdown(summary))
    return summary


# -------------------------------------------------------------------------------- rendering


def _f(v: float | None, fmt: str = ".4f") -> str:
    return "n/a" if v is None else format(v, fmt)


def _cell(s: dict) -> str:
    if s["mean"] is None:
        return "n/a"
    return f"{s['mean']:.4f}" + ("" if s["std"] is None else f" ± {s['std']:.4f}")


def _test_cell(t: dict) -> str:
    """Mean difference [95% CI] (p; MDE = the smallest difference the study detects)."""
    if t["mean_diff"] is None:
        return "n/a"
    if t["t"] is None:
        return f"{t['mean_diff']:+.4f} (n=1)"
    return (
        f"{t['mean_diff']:+.4f} [{t['ci_lo']:+.4f}, {t['ci_hi']:+.4f}] "
        f"(p={t['p']:.3f}; MDE {t['mde']:.4f})"
    )


_MODE_TITLE = {
    "model": "seeds vary the model (search / retrain / evolution seeds); data fixed",
    "data": "seeds vary the model and the simulated data (data.seed)",
}


def _diff_table(title: str, first: str, rows: list[tuple[str, str, dict]], keys) -> list[str]:
    lines = ["", f"### {title}", ""]
    lines += [f"| {first} | model | " + " | ".join(f"Δ {column_label(k)}" for k in keys) + " |"]
    lines += ["|" + " --- |" * (2 + len(keys))]
    for a, model, tests in rows:
        lines.append(f"| {a} | {model} | " + " | ".join(_test_cell(tests[k]) for k in keys) + " |")
    return lines


def render_markdown(summary: dict) -> str:
    keys = summary["keys"]
    lines = [f"# Study {summary['name']}", ""]
    if summary.get("description"):
        lines += [summary["description"], ""]
    lines += [
        f"Test metrics, mean ± sample std over up to {summary['seeds']} seeds. Paired: model "
        f"minus {summary['compare_to']} of the same run, mean difference [95% CI] (two-sided p "
        "of the paired t-test, df = seeds - 1; MDE: the smallest true difference these seeds "
        "detect at 5% with 80% power). Soft AUC scores against the simulator's true "
        "probabilities; (all) scores post-click CVR on every impression.",
        "",
    ]
    for mode, body in summary["modes"].items():
        lines += [f"## {_MODE_TITLE[mode]}", ""]
        head = "| arm | model | seeds | " + " | ".join(column_label(k) for k in keys) + " |"
        lines += ["### Test metrics", "", head, "|" + " --- |" * (3 + len(keys))]
        for arm, a in body["arms"].items():
            for model, row in a["models"].items():
                n = max((row[k]["n"] for k in keys), default=0)
                cells = " | ".join(_cell(row[k]) for k in keys)
                lines.append(f"| {arm} | {model} | {n} | {cells} |")
        rows = [(arm, m, t) for arm, a in body["arms"].items() for m, t in a["paired"].items()]
        lines += _diff_table(f"Paired difference vs {summary['compare_to']}", "arm", rows, keys)
        rows = [
            (arm, pair, t)
            for arm, a in body["arms"].items()
            for pair, t in a.get("model_pairs", {}).items()
        ]
        if rows:
            lines += _diff_table("Paired difference between models", "arm", rows, keys)
        if body["arm_pairs"]:
            rows = [(f"{p['a']} − {p['b']}", p["model"], p["tests"]) for p in body["arm_pairs"]]
            lines += _diff_table("Paired difference between arms", "arm a − arm b", rows, keys)
        lines += ["", "### Search cost (means over seeds) and kept edges", ""]
        lines += [
            "| arm | search | search steps | search s | candidates trained | kept edges "
            "| kept-set Jaccard | run wall s |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for arm, a in body["arms"].items():
            c, kept = a["cost"], a["kept_edges"]
            kept_cell = _f(kept["mean"], ".1f") + (
                "" if kept["std"] is None else f" ± {kept['std']:.1f}"
            )
            lines.append(
                f"| {arm} | {c['method']} | {_f(c['steps'], '.0f')} | {_f(c['seconds'], '.1f')} "
                f"| {_f(c['candidates'], '.1f')} | {kept_cell} | "
                f"{_f(a.get('kept_jaccard'), '.2f')} | {_f(c['run_seconds'], '.1f')} |"
            )
        timed = [
            (arm, a["cost"]["phases"]) for arm, a in body["arms"].items() if a["cost"].get("phases")
        ]
        if timed:
            lines += [
                "",
                "Where a run's time goes (mean seconds per run; compile = XLA's tracing, lowering "
                "and compiling, taken out of the phase that asked for it):",
                "",
                "| arm | " + " | ".join(phases.PHASES) + " |",
                "| --- |" + " --- |" * len(phases.PHASES),
            ]
            for arm, t in timed:
                cells = " | ".join(f"{t[k]:.1f}" for k in phases.PHASES)
                lines.append(f"| {arm} | {cells} |")
        lines += ["", "Share of seeds keeping each edge:", ""]
        for arm, a in body["arms"].items():
            freq = a.get("kept_frequency") or {}
            cells = ", ".join(f"{e} {v:.1f}" for e, v in freq.items()) or "none kept"
            lines.append(f"* {arm}: {cells}")
        lines.append("")
    return "\n".join(lines)
