"""`autoheri evolve`: the evolutionary search (search/evolution.py) run over a workdir.

Scoring a candidate trains the fixed architecture its mask names from fresh weights for a
short budget and computes `evolution.metric` on the VALIDATION split; the test split is never
looked at. The log of scored candidates doubles as a resume file: rerunning `autoheri evolve`
over the same workdir replays the draws and takes the logged scores instead of retraining.

The workdir then holds
  evolution.jsonl     one record per evaluation: index, cycle, mask, edges, score, steps,
                      seconds (train + score), cached
  evolution.json      the settings, the best mask, the search cost (train steps, seconds,
                      candidates) and, when the workdir also holds a one-shot search, its cost
  architecture.json   the best mask as an architecture record (probabilities 1.0 / 0.0,
                      search_mode "evolution"): `autoheri retrain` and `evaluate` take it as is
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Sequence

import numpy as np

from autoheri_jax import artifacts
from autoheri_jax.artifacts import SEARCHED
from autoheri_jax.artifacts.lifecycle import (
    check_batch_sizes,
    install_architecture,
    saved_config,
    starting,
)
from autoheri_jax.config import Config, ConfigError, EvolutionConfig, from_dict, to_dict
from autoheri_jax.data.dataset import CTRDataset
from autoheri_jax.data.sources import Splits
from autoheri_jax.metrics import BinaryScores, funnel_metrics, metric_keys, nll
from autoheri_jax.model.edges import Edge
from autoheri_jax.progress import say as _say
from autoheri_jax.search import architecture
from autoheri_jax.search.evolution import (
    VALID_LOSS_METRIC,
    Evaluation,
    Mask,
    aging_evolution,
    budget_train_config,
    budget_train_rows,
    mask_bits,
    search_edges,
)
from autoheri_jax.search.records import ArchitectureRecord
from autoheri_jax.workdir_format import read_json_file

LOG = "evolution.jsonl"
SUMMARY = "evolution.json"
ONESHOT_RECORD = "oneshot_architecture.json"  # a one-shot architecture.json that evolve replaced


def validation_score(cfg: Config, spec, params, valid: CTRDataset) -> float | None:
    from autoheri_jax.train.predict import predict_dataset

    cond, entire = predict_dataset(spec, params, valid, cfg.eval_batch_size)
    if cfg.evolution.metric == VALID_LOSS_METRIC:
        # every impression counts here, where a CVR AUC rests on a few hundred conversions
        stages = range(entire.shape[1])
        return -sum(nll(BinaryScores(entire[:, k], valid.labels[:, k])) for k in stages)
    key = cfg.evolution.metric.removesuffix("_auc")
    return funnel_metrics(valid.labels, cond, entire, valid.stage_names)[key]["auc"]


def make_scorer(
    cfg: Config, data: Splits, edges: Sequence[Edge], progress: bool
) -> Callable[[Mask], tuple[float | None, dict]]:
    """mask -> (validation score, {"steps"}): trains the masked architecture from scratch."""
    from autoheri_jax.experiment import spec_for
    from autoheri_jax.model.variants import derived_model
    from autoheri_jax.train.fit import train_model

    if data.valid.num_rows == 0:
        raise ConfigError("evolution scores candidates on the validation split, which is empty")
    tcfg = budget_train_config(cfg)
    rows = budget_train_rows(cfg, data.train)

    def score(mask: Mask) -> tuple[float | None, dict]:
        kept = [e for e, on in zip(edges, mask, strict=True) if on]
        spec = spec_for(derived_model(cfg.model, kept), rows)
        state, stats = train_model(
            spec,
            tcfg,
            rows,
            desc=f"evolve:{mask_bits(mask)}",
            progress=progress,
            parallel=cfg.parallel,
            valid=data.valid if tcfg.early_stop_patience else None,
        )
        params = artifacts.to_host(state.params)
        return validation_score(cfg, spec, params, data.valid), {"steps": stats["steps"]}

    return score


def _record(ev: Evaluation, edges: Sequence[Edge]) -> dict:
    return {
        "index": ev.index,
        "cycle": ev.cycle,
        "mask": list(ev.mask),
        "edges": [e.name for e, on in zip(edges, ev.mask, strict=True) if on],
        "score": ev.score,
        "steps": ev.steps,
        "seconds": ev.seconds,
        "cached": ev.cached,
    }


def read_log(wd: artifacts.Workdir) -> list[dict]:
    return artifacts.read_jsonl(wd.path(LOG))


@contextlib.contextmanager
def _starting(cfg: Config, wd: artifacts.Workdir, fresh: bool):
    """Like a search's `starting` (config.json once the `with` body has loaded and validated
    the data), but a workdir with a one-shot run of the same config (apart from the evolution
    section) is kept: its baselines stay, the derived model goes."""
    from autoheri_jax.data.sources import check_data_path

    if fresh or not wd.path("config.json").exists() or not cfg.checkpoint.resume:
        with starting(cfg, wd, fresh=True):
            for name in (LOG, SUMMARY, ONESHOT_RECORD):
                wd.path(name).unlink(missing_ok=True)
            yield
        return
    saved = wd.read_json("config.json", made_by="search")
    ours = to_dict(cfg.evolution)
    if saved.get("evolution", ours) != ours and read_log(wd):
        old = saved.get("evolution", {})
        keys = sorted(f"evolution.{k}" for k in ours if old.get(k) != ours[k])
        raise ConfigError(
            f"{wd.root} holds an evolution run with other settings; differing keys: {keys} "
            "(pass --fresh to start over)"
        )
    earlier = from_dict(EvolutionConfig, saved.get("evolution", {}), prefix="evolution.")
    saved_config(wd, dataclasses.replace(cfg, evolution=earlier))  # refuses other differences
    check_data_path(cfg.data)
    yield
    _say(f"evolving in {wd.root} (resuming any logged candidates; --fresh starts over)")
    wd.write_json("config.json", to_dict(cfg))


def _install_architecture(wd: artifacts.Workdir, record: ArchitectureRecord) -> None:
    """Keeps a one-shot architecture.json as ONESHOT_RECORD, then installs the evolved one
    (a different earlier architecture's derived model and results are dropped; baselines stay)."""
    old_path = wd.path("architecture.json")
    if old_path.exists():
        old = read_json_file(old_path)
        if old.get("search_mode") != "evolution" and not wd.path(ONESHOT_RECORD).exists():
            wd.write_json(ONESHOT_RECORD, old)
    install_architecture(wd, record, stale=("results.json",))


def oneshot_cost(wd: artifacts.Workdir) -> dict | None:
    """Steps and seconds of the one-shot search in this workdir, if it has one."""
    path = wd.path("models", SEARCHED, "train.json")
    if not path.exists():
        return None
    stats = read_json_file(path)
    return {"steps": stats["steps"], "seconds": stats["seconds"]}


def evolve(cfg: Config, wd: artifacts.Workdir, progress: bool = True, fresh: bool = False) -> dict:
    """Aging evolution over edge masks; writes evolution.jsonl/.json and architecture.json."""
    from autoheri_jax.experiment import load_data

    ev = cfg.evolution
    with _starting(cfg, wd, fresh):
        data = load_data(cfg, wd, progress)
        check_batch_sizes(cfg, data, phases=("retrain",))  # each candidate's (budget_train_config)
        edges = search_edges(cfg, data.train.num_stages)
        keys = [k for k, _, _ in metric_keys(data.train.stage_names)]
        if ev.metric != VALID_LOSS_METRIC and ev.metric.removesuffix("_auc") not in keys:
            raise ConfigError(f"evolution.metric: {ev.metric!r} is not scored here; keys: {keys}")
    logged = read_log(wd)
    tcfg = budget_train_config(cfg)
    rows = budget_train_rows(cfg, data.train)
    per_candidate = tcfg.epochs * (rows.num_rows // tcfg.batch_size)
    _say(
        f"[evolve] {len(edges)} candidate edges; population {ev.population}, sample {ev.sample}, "
        f"cycles {ev.cycles}; each candidate: {per_candidate} steps over {rows.num_rows} rows, "
        f"scored by validation {ev.metric}"
        + (f"; {len(logged)} evaluations logged, resuming" if logged else "")
    )

    def known(index: int, mask: Mask) -> Evaluation | None:
        if index >= len(logged):
            return None
        r = logged[index]
        if tuple(r["mask"]) != mask:
            raise ConfigError(
                f"{wd.path(LOG)} record {index} has mask {mask_bits(tuple(r['mask']))}, this run "
                f"drew {mask_bits(mask)}: it was written by another config (pass --fresh to start "
                "over)"
            )
        return Evaluation(
            index, r["cycle"], mask, r["score"], r["steps"], r["seconds"], r["cached"]
        )

    total = ev.population + ev.cycles

    def on_eval(e: Evaluation) -> None:
        wd.append_jsonl(LOG, _record(e, edges))
        score = "n/a" if e.score is None else f"{e.score:.4f}"
        cost = "seen before: cached" if e.cached else f"{e.steps} steps, {e.seconds:.1f}s"
        _say(
            f"[evolve] {e.index + 1}/{total} mask {mask_bits(e.mask)}: {ev.metric} {score} ({cost})"
        )

    t0 = time.perf_counter()
    result = aging_evolution(
        len(edges), make_scorer(cfg, data, edges, progress), ev, on_eval=on_eval, known=known
    )
    best = result.best
    probs = np.asarray(best.mask, dtype=np.float64)
    # a mask's probabilities are 0 or 1: any threshold in (0, 1) keeps its on edges
    record = architecture.architecture_record(
        edges, probs, None, 0.5, data.train.stage_names, "evolution"
    )
    _install_architecture(wd, record)
    text = architecture.render_architecture(record, len(cfg.model.hidden))
    if artifacts.is_writer():
        wd.path("architecture.txt").write_text(text)
    trained = result.trained
    cost = {
        "train_steps": sum(e.steps for e in trained),
        "seconds": sum(e.seconds for e in trained),  # train + score of every trained candidate
        "candidates": len(trained),  # distinct masks trained
        "evaluations": len(result.history),
        "cache_hits": len(result.history) - len(trained),
        "steps_per_candidate": per_candidate,
        "session_seconds": time.perf_counter() - t0,  # this invocation (0-ish when replayed)
    }
    summary = {
        "metric": ev.metric,
        "settings": to_dict(ev),
        "mutation_prob": ev.mutation_prob or 1.0 / len(edges),
        "candidate_edges": [e.name for e in edges],
        "best": _record(best, edges),
        "cost": cost,
        "oneshot": oneshot_cost(wd),
    }
    wd.write_json(SUMMARY, summary)
    _say(text)
    one = summary["oneshot"]
    _say(
        f"[evolve] best validation {ev.metric} "
        f"{'n/a' if best.score is None else f'{best.score:.4f}'} (mask {mask_bits(best.mask)}); "
        f"cost {cost['train_steps']} train steps, {cost['seconds']:.1f}s over "
        f"{cost['candidates']} candidates ({cost['cache_hits']} cache hits)"
        + ("" if one is None else f"; one-shot search: {one['steps']} steps, {one['seconds']:.1f}s")
    )
    return summary
