"""Evaluation speed against the ESMM training step on the same store, and exact AUC at 42M rows.

Command:
  python benchmarks/eval_speed.py --store DIR [--config experiments/configs/aliccp.py]
      [--models esmm,retrain] [--batch-size B] [--auc-rows 42000000] [--old] [--json out.json]
  python benchmarks/eval_speed.py --rows 2000000 --workdir DIR ...   # makes DIR/store first
  python benchmarks/eval_speed.py --rows 20000 --workdir DIR --smoke  # the tests' check

DIR/store (with --rows) is the store of benchmarks/scale.py's layout: scale_data.py's
Ali-CCP-shaped raw files of --rows impressions, then `autoheri prepare` (reused when present).
One process, one machine; the parts run interleaved (step, evaluate, old, step), so the load
of a shared machine falls on all of them, and the step is timed before and after:

  step      the ESMM train step (measure.bench_train: batches on the device, the config's
            retrain batch size) on the store's train split, examples/s (median of repeats)
  evaluate  what `autoheri evaluate` does per model, every model of --models at once
            (esmm, search, retrain: measure.model_for; untrained weights, speed does not
            depend on them): predict_models over the whole test split, then funnel_metrics
            per model. rows/s per model = test rows x models / seconds; "first" includes the
            compilations, "steady" is a second pass
  old       (--old) the path before, for one model: training-layout batches (every bag
            padded to max_bag_len), one device round trip each, then the reference metrics
            (tests/reference_eval.py: scipy midranks, one argsort per metric)
  ratio     evaluate (steady) rows/s per model / the step's examples/s (issue 34: >= 5)
  auc       --auc-rows synthetic rows (float32 scores, 4% positives): metrics.auc alone and
            funnel_metrics (2 stages: ctr, cvr on the clicked rows, ctcvr); with --old also
            the reference AUC (rankdata)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT)]

import measure  # noqa: E402

from autoheri_jax import metrics  # noqa: E402
from autoheri_jax.config import load_config  # noqa: E402
from autoheri_jax.data.store import is_finished, open_split  # noqa: E402
from autoheri_jax.experiment import spec_for  # noqa: E402
from autoheri_jax.model.network import init_params  # noqa: E402
from autoheri_jax.train.predict import predict_models  # noqa: E402

SMOKE = ["model.hidden=[16,8]", "model.embed_dim=4", "retrain.batch_size=256"]


def make_store(rows: int, workdir: Path) -> Path:
    raw, store = workdir / "raw", workdir / "store"
    if is_finished(store):
        return store
    world = raw / "world.json"
    if not (world.exists() and json.loads(world.read_text())["rows"] == rows):
        subprocess.run(
            [
                sys.executable,
                str(ROOT / "benchmarks" / "scale_data.py"),
                "--rows",
                str(rows),
                "--out",
                str(raw),
            ],
            check=True,
        )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "autoheri_jax",
            "prepare",
            "--data",
            str(raw),
            "--out",
            str(store),
            "--no-progress",
            "--min-count",
            "2" if rows < 10**6 else "10",
        ],
        check=True,
        cwd=ROOT,
    )
    return store


def _step(cfg, train, smoke: bool) -> float:
    model, tcfg = measure.model_for(cfg, "esmm")
    res = measure.bench_train(
        spec_for(model, train),
        tcfg,
        train,
        steps=3 if smoke else 20,
        repeats=1 if smoke else 3,
        pipeline=False,
    )
    return res["device"]["examples_per_s"]


def _evaluate(models, test, batch_size: int) -> float:
    t0 = time.perf_counter()
    for cond, entire in predict_models(models, test, batch_size):
        metrics.funnel_metrics(test.labels, cond, entire, test.stage_names, test.true_probs)
    return time.perf_counter() - t0


def _old(model, test, batch_size: int) -> dict:
    from tests import reference_eval

    t0 = time.perf_counter()
    cond, entire = reference_eval.predict(*model, test, batch_size)
    predict_s = time.perf_counter() - t0
    reference_eval.funnel_metrics(test.labels, cond, entire, test.stage_names, test.true_probs)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "predict_s": predict_s, "rows_per_s": test.num_rows / seconds}


def auc_seconds(rows: int, old: bool) -> dict:
    rng = np.random.default_rng(0)
    scores = rng.random(rows, dtype=np.float32)
    clicks = rng.random(rows) < 0.04
    labels = np.stack([clicks, clicks & (rng.random(rows) < 0.1)], axis=1).astype(np.int8)
    cond = rng.random((rows, 2), dtype=np.float32)
    out = {"rows": rows}
    t0 = time.perf_counter()
    metrics.auc(metrics.BinaryScores(scores, labels[:, 0]))
    out["auc_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    metrics.funnel_metrics(labels, cond, np.cumprod(cond, axis=1), ("click", "conversion"))
    out["funnel_metrics_s"] = time.perf_counter() - t0
    if old:
        from tests import reference_eval

        t0 = time.perf_counter()
        reference_eval.auc(metrics.BinaryScores(scores, labels[:, 0]))
        out["old_auc_s"] = time.perf_counter() - t0
    return out


def run(args) -> dict:
    store = args.store or make_store(args.rows, args.workdir)
    sets = [*(SMOKE if args.smoke else []), "data.source=files", f"data.path={store}"]
    cfg = load_config(str(args.config), sets)
    splits = {s: open_split(store, s) for s in ("train", "test")}
    train, test = (
        dataclasses.replace(splits[s], max_bag_len=cfg.data.max_bag_len) for s in ("train", "test")
    )
    batch_size = args.batch_size or cfg.eval_batch_size
    names = args.models.split(",")
    models = []
    for k, name in enumerate(names):
        spec = spec_for(measure.model_for(cfg, name)[0], test, searched=name == "search")
        models.append((spec, jax.device_get(init_params(jax.random.key(k), spec))))
    out = {
        "store": str(store),
        "train_rows": train.num_rows,
        "test_rows": test.num_rows,
        "models": names,
        "batch_size": batch_size,
        "cpus": os.cpu_count(),
        "load_before": os.getloadavg()[0],
    }
    out["step_before"] = _step(cfg, train, args.smoke)
    first = _evaluate(models, test, batch_size)
    steady = _evaluate(models, test, batch_size)
    per_model = test.num_rows * len(models)
    out["evaluate"] = {
        "first_s": first,
        "steady_s": steady,
        "first_rows_per_s_per_model": per_model / first,
        "rows_per_s_per_model": per_model / steady,
    }
    if args.old:
        out["old"] = _old(models[0], test, batch_size)
    out["step_after"] = _step(cfg, train, args.smoke)
    out["step_examples_per_s"] = (out["step_before"] + out["step_after"]) / 2
    out["ratio"] = out["evaluate"]["rows_per_s_per_model"] / out["step_examples_per_s"]
    if args.old:
        out["old"]["ratio"] = out["old"]["rows_per_s"] / out["step_examples_per_s"]
    if args.auc_rows:
        out["auc"] = auc_seconds(args.auc_rows, args.old)
    out["load_after"] = os.getloadavg()[0]
    return out


def _print(out: dict) -> None:
    ev = out["evaluate"]
    load = f"load {out['load_before']:.1f} -> {out['load_after']:.1f}"
    print(
        f"store {out['store']}: train {out['train_rows']:,} rows, test {out['test_rows']:,} "
        f"rows; {out['cpus']} CPUs, {load}"
    )
    print(
        f"ESMM train step: {out['step_before']:,.0f} examples/s before, "
        f"{out['step_after']:,.0f} after (mean {out['step_examples_per_s']:,.0f})"
    )
    print(
        f"evaluate {len(out['models'])} models ({', '.join(out['models'])}), batch "
        f"{out['batch_size']}: {ev['rows_per_s_per_model']:,.0f} rows/s per model steady "
        f"({ev['steady_s']:.1f} s), {ev['first_rows_per_s_per_model']:,.0f} with compilation "
        f"({ev['first_s']:.1f} s); {out['ratio']:.2f}x the step"
    )
    if "old" in out:
        o = out["old"]
        print(
            f"old path, one model: {o['rows_per_s']:,.0f} rows/s ({o['seconds']:.1f} s, "
            f"predict {o['predict_s']:.1f} s); {o['ratio']:.2f}x the step"
        )
    if "auc" in out:
        a = out["auc"]
        old = f", old AUC {a['old_auc_s']:.1f} s" if "old_auc_s" in a else ""
        print(
            f"{a['rows']:,} rows: exact AUC {a['auc_s']:.1f} s, funnel_metrics (3 keys) "
            f"{a['funnel_metrics_s']:.1f} s{old}"
        )


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", type=Path, help="a prepared store (else --rows and --workdir)")
    ap.add_argument("--rows", type=int)
    ap.add_argument("--workdir", type=Path)
    ap.add_argument("--config", type=Path, default=ROOT / "experiments" / "configs" / "aliccp.py")
    ap.add_argument("--models", default="esmm,retrain")
    ap.add_argument("--batch-size", type=int, default=0, help="default: the config's")
    ap.add_argument("--auc-rows", type=int, default=42_000_000)
    ap.add_argument("--old", action="store_true", help="also time the path before (slow)")
    ap.add_argument("--smoke", action="store_true", help="a tiny model (the tests' check)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    if args.store is None and (args.rows is None or args.workdir is None):
        ap.error("--store, or --rows and --workdir")
    out = run(args)
    _print(out)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
