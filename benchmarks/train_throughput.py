"""Train-step throughput of the search and retrain steps on the default model.

Command:
  python benchmarks/train_throughput.py [--batch-size 2048] [--steps 50] [--json out.json]

Model: the default config's (23 Ali-CCP fields, embed 16, towers 128-64-32, Adam). Measures
examples/s of the jitted update (a) with the batch already on the device (the step alone) and
(b) fed from host numpy as the trainer does (gather + transfer + step), for
  search   hierarchical candidates, searched gates, entropy term (9 edges)
  retrain  the hierarchical model with every edge on (the largest derived architecture)
  esmm     no edges (the baseline)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import jax
import numpy as np

from autoheri_jax.config import load_config
from autoheri_jax.experiment import load_data, spec_for
from autoheri_jax.models import VARIANTS
from autoheri_jax.optim import make_optimizer
from autoheri_jax.train import init_state, make_update_fn


def bench(spec, tcfg, data, steps: int, batch_size: int) -> dict:
    opt = make_optimizer(tcfg)
    state = init_state(spec, tcfg, opt)
    update = make_update_fn(spec, tcfg, opt)
    rng = np.random.default_rng(0)
    host_batches = [data.batch(rng.integers(0, data.num_rows, batch_size)) for _ in range(8)]
    dev_batches = [jax.device_put(b) for b in host_batches]
    t0 = time.perf_counter()
    state, aux = update(state, dev_batches[0])
    jax.block_until_ready(aux)
    compile_s = time.perf_counter() - t0
    out = {"compile_s": compile_s}
    for mode, batches in (("device", dev_batches), ("host", None)):
        for i in range(3):  # warm-up
            state, aux = update(state, dev_batches[i % 8])
        jax.block_until_ready(state)
        t0 = time.perf_counter()
        for i in range(steps):
            if batches is None:
                b = data.batch(rng.integers(0, data.num_rows, batch_size))
            else:
                b = batches[i % 8]
            state, aux = update(state, b)
        jax.block_until_ready(state)
        dt = time.perf_counter() - t0
        out[f"{mode}_examples_per_s"] = steps * batch_size / dt
        out[f"{mode}_step_ms"] = 1e3 * dt / steps
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="experiments/configs/default.py")
    ap.add_argument("--batch-size", type=int, default=2048)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    cfg = load_config(Path(__file__).resolve().parents[1] / args.config)
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, num_valid=0, num_test=1))
    data = load_data(cfg).train
    search_cfg = dataclasses.replace(cfg.search, batch_size=args.batch_size)
    retrain_cfg = dataclasses.replace(cfg.retrain, batch_size=args.batch_size)
    runs = {
        "search": (spec_for(cfg.model, data), search_cfg),
        "retrain": (spec_for(VARIANTS["hierarchical_all_on"](cfg.model), data), retrain_cfg),
        "esmm": (spec_for(VARIANTS["esmm"](cfg.model), data), retrain_cfg),
    }
    print(
        f"jax {jax.__version__} on {jax.devices()[0].device_kind}, batch {args.batch_size}, "
        f"{args.steps} timed steps, {sum(data.vocab_sizes):,} embedding rows"
    )
    print(
        f"{'step':<10}{'edges':>6}{'compile s':>11}{'ex/s (device)':>16}{'ex/s (host)':>14}"
        f"{'ms/step':>9}"
    )
    results = {}
    for name, (spec, tcfg) in runs.items():
        r = bench(spec, tcfg, data, args.steps, args.batch_size)
        results[name] = {"edges": spec.num_edges, **r}
        print(
            f"{name:<10}{spec.num_edges:>6}{r['compile_s']:>11.2f}"
            f"{r['device_examples_per_s']:>16,.0f}{r['host_examples_per_s']:>14,.0f}"
            f"{r['device_step_ms']:>9.2f}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"batch_size": args.batch_size, **results}, indent=2))


if __name__ == "__main__":
    main()
