"""K seeds in one vmapped step against K separate runs, on the study-size model.

Command:
  python benchmarks/seeds_throughput.py [--ks 1,2,5,10] [--steps 100] [--dense-embeddings]
      [--json out.json]
  python benchmarks/seeds_throughput.py --smoke          # seconds: the tests' check

Model and data: experiments/configs/study_base.py (embed 8, towers 64-32-16, batch 1024, 23
fields), each seed its own simulated world (data.seed = k) of steps x batch rows. Two steps:
the search (AutoHERI with 9 gated edges and the arch partition) and ESMM's retrain.

Steady state: the single-run step (`make_update_fn`, what `autoheri run` uses) and the K-seed
vmapped step (`seed_batch.make_seed_step`), each compiled and warmed by one step, then timed
over --steps steps fed by the real grain pipeline. Printed per K: seconds per step, examples/s
per seed, and the time of K seeds relative to one run ("x one run"; K separate runs cost K).
End to end: `train` of one seed against `train_seeds` of 5 seeds (compile included), the
figure a study waits for. Target (issue 12): 5 seeds in <= 2x the time of one.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import grain
import jax

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autoheri_jax.config import GradientSearch, load_config, supernet_config  # noqa: E402
from autoheri_jax.data.pipeline import StepBatchSource, train_iterator  # noqa: E402
from autoheri_jax.data.sources import load_splits  # noqa: E402
from autoheri_jax.experiment import spec_for  # noqa: E402
from autoheri_jax.model.variants import VARIANTS  # noqa: E402
from autoheri_jax.train.fit import train_model  # noqa: E402
from autoheri_jax.train.optim import make_optimizer  # noqa: E402
from autoheri_jax.train.seed_batch import StackedSource, make_seed_step, stack_trees, train_seeds  # noqa: E402
from autoheri_jax.train.step import init_state, make_update_fn  # noqa: E402

BASE = ROOT / "experiments" / "configs" / "study_base.py"
SMOKE = ["data.num_users=50", "data.num_items=80", "model.hidden=[8,4]", "model.embed_dim=4"]


def _datasets(cfg, k_max: int, rows: int):
    data = dataclasses.replace(cfg.data, num_train=rows, num_valid=0, num_test=1000)
    return [load_splits(dataclasses.replace(data, seed=k), None, False).train for k in range(k_max)]


def _steady(step_fn, state, batches, steps: int) -> float:
    """Seconds per step over `steps` steps after one warm-up (compile) step."""
    state, _ = step_fn(state, next(batches))
    jax.block_until_ready(state)
    t0 = time.perf_counter()
    for _ in range(steps):
        state, _ = step_fn(state, next(batches))
    jax.block_until_ready(state)
    return (time.perf_counter() - t0) / steps


def bench_model(name: str, spec, tcfg, datas, ks, steps: int) -> dict:
    opt = make_optimizer(tcfg)
    cfgs = [dataclasses.replace(tcfg, seed=k) for k in range(max(ks))]
    sources = [
        StepBatchSource(d, tcfg.batch_size, c.seed, 1) for d, c in zip(datas, cfgs, strict=False)
    ]
    update = make_update_fn(spec, tcfg, opt)
    state = init_state(spec, cfgs[0], opt)
    cost = update.lower(state, sources[0][0]).compile().cost_analysis()
    flops = float((cost[0] if isinstance(cost, list) else cost).get("flops", 0.0))
    one = _steady(update, state, train_iterator(sources[0]), steps)
    rows = []
    for k in ks:
        state = stack_trees([init_state(spec, c, opt) for c in cfgs[:k]])
        ds = grain.MapDataset.source(StackedSource(sources[:k]))
        batches = iter(ds.to_iter_dataset(grain.ReadOptions(num_threads=2, prefetch_buffer_size=4)))
        per_step = _steady(make_seed_step(spec, tcfg, opt), state, batches, steps)
        rows.append(
            {
                "k": k,
                "s_per_step": per_step,
                "examples_per_s_per_seed": tcfg.batch_size / per_step,
                "x_one_run": per_step / one,
            }
        )
    return {
        "model": name,
        "one_run_s_per_step": one,
        "flops_per_step": flops,
        "one_run_examples_per_s": tcfg.batch_size / one,
        "vmapped": rows,
    }


def end_to_end(spec, tcfg, datas, k: int) -> dict:
    cfgs = [dataclasses.replace(tcfg, seed=s) for s in range(k)]
    t0 = time.perf_counter()
    train_model(spec, cfgs[0], datas[0], desc="one", progress=False)
    one = time.perf_counter() - t0
    t0 = time.perf_counter()
    train_seeds(spec, cfgs, datas[:k], desc="vmapped", progress=False)
    many = time.perf_counter() - t0
    return {"k": k, "one_run_s": one, "k_seeds_s": many, "x_one_run": many / one}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ks", default="1,2,5,10")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--smoke", action="store_true", help="tiny world and model, seconds")
    ap.add_argument("--dense-embeddings", action="store_true", help="train.sparse_embeddings=false")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    ks = [int(k) for k in args.ks.split(",")]
    if args.smoke:  # one model, one K, no end-to-end pass: the code paths, in seconds
        ks, args.steps = [2], 3
    cfg = load_config(BASE, SMOKE if args.smoke else [])
    batch = 64 if args.smoke else cfg.search.batch_size
    sparse = not args.dense_embeddings
    search_cfg = supernet_config(  # the gated supernet (the gradient search's defaults)
        dataclasses.replace(cfg.search, batch_size=batch, epochs=1, sparse_embeddings=sparse),
        arch=GradientSearch(),
    )
    retrain_cfg = dataclasses.replace(
        cfg.retrain, batch_size=batch, epochs=1, sparse_embeddings=sparse
    )
    datas = _datasets(cfg, max(*ks, 1 if args.smoke else 5), (args.steps + 2) * batch)
    specs = {
        "search": (spec_for(cfg.model, datas[0], searched=True), search_cfg),
        "esmm": (spec_for(VARIANTS["esmm"](cfg.model), datas[0]), retrain_cfg),
    }
    out = {
        "backend": jax.default_backend(),
        "devices": len(jax.devices()),
        "steps": args.steps,
        "batch_size": batch,
        "models": [],
    }
    if args.smoke:
        specs.pop("esmm")
    for name, (spec, tcfg) in specs.items():
        res = bench_model(name, spec, tcfg, datas, ks, args.steps)
        out["models"].append(res)
        gflops = res["flops_per_step"] / 1e9
        print(
            f"{name}: one run {res['one_run_s_per_step'] * 1e3:.2f} ms/step "
            f"({res['one_run_examples_per_s']:,.0f} examples/s; XLA counts {gflops:.3f} GFLOP "
            f"a step: {gflops / res['one_run_s_per_step']:.1f} GFLOP/s)"
        )
        print(f"  {'K':>3} {'ms/step':>9} {'ex/s per seed':>14} {'x one run':>10} {'K runs':>7}")
        for r in res["vmapped"]:
            cells = (
                f"{r['k']:>3}",
                f"{r['s_per_step'] * 1e3:>9.2f}",
                f"{r['examples_per_s_per_seed']:>14,.0f}",
                f"{r['x_one_run']:>10.2f}",
                f"{r['k']:>7}",
            )
            print("  " + " ".join(cells))
    if not args.smoke:
        spec, tcfg = specs["search"]
        e2e = out["end_to_end"] = end_to_end(spec, tcfg, datas, 5)
        print(
            f"end to end, search ({args.steps + 2} steps, compile included): one run "
            f"{e2e['one_run_s']:.1f}s, 5 vmapped seeds {e2e['k_seeds_s']:.1f}s "
            f"= {e2e['x_one_run']:.2f}x one run (separate runs: 5x)"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
