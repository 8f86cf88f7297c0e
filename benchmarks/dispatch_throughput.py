"""Steps per dispatch and the device-resident store: steps/s and examples/s of `loop.train`.

Command:
  python benchmarks/dispatch_throughput.py [--models retrain] [--batch-size 2048]
      [--ks 1,4,16] [--stores host,device] [--steps 96] [--json out.json]
  python benchmarks/dispatch_throughput.py --smoke [--json ...]   # seconds on CPU: the tests'

Each configuration (model x K = train.steps_per_dispatch x store: host batches through the
grain pipeline, or device = train.device_resident=on) is one `loop.train` run on simulated
impressions of experiments/configs/default.py's world: the real loop, input path included.
Models as measure.model_for: esmm (no edges), retrain (hierarchical_all_on, every edge on: the
default config's largest derived model). log_every is the Ks' least common multiple, so every
configuration logs (and syncs with the device) at the same steps; the time from the first
record (compile and warm-up before it) to the last gives steps/s and examples/s. The machine
may be shared: the load average is printed beside the figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path

import jax

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import measure

from autoheri_jax.train.fit import train_model

STORES = {"host": "off", "device": "on"}


def bench_one(spec, tcfg, data, k: int, store: str, steps: int, log_every: int) -> dict:
    """One loop.train run: `log_every` warm-up steps, then `steps` timed ones."""
    total = log_every + steps
    epochs = math.ceil(total / (data.num_rows // tcfg.batch_size))
    # no validation split here, so no early stopping (the default config's retrain has it)
    cfg = dataclasses.replace(
        tcfg,
        steps_per_dispatch=k,
        device_resident=STORES[store],
        early_stop_patience=0,
        log_every=log_every,
        max_steps=total,
        epochs=epochs,
    )
    stamps = {}
    t0 = time.perf_counter()
    stamp = lambda step, record: stamps.setdefault(step, time.perf_counter())
    train_model(spec, cfg, data, desc=f"K={k} {store}", progress=False, on_log=stamp)
    first, last = min(stamps), max(stamps)
    seconds = stamps[last] - stamps[first]
    n = last - first
    return {
        "k": k,
        "store": store,
        "steps": n,
        "seconds": seconds,
        "steps_per_s": n / seconds,
        "examples_per_s": n * tcfg.batch_size / seconds,
        "first_record_s": stamps[first] - t0,  # compile, store copy and warm-up included
    }


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="retrain")
    ap.add_argument("--batch-size", type=int, default=2048)
    ap.add_argument("--ks", default="1,4,16")
    ap.add_argument("--stores", default="host,device")
    ap.add_argument("--steps", type=int, default=96, help="timed steps (a multiple of lcm(Ks))")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes: the code paths on CPU")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    ks = [int(x) for x in args.ks.split(",")]
    stores = args.stores.split(",")
    log_every = math.lcm(*ks)
    steps = max(log_every, args.steps // log_every * log_every)
    cfg = measure.base_config(
        "experiments/configs/smoke.py" if args.smoke else "experiments/configs/default.py"
    )
    batch = 64 if args.smoke else args.batch_size
    rows = 8 * batch if args.smoke else max(32 * batch, 65_536)
    data = measure.train_data(cfg, rows)
    dev = jax.devices()[0]
    out = {
        "backend": jax.default_backend(),
        "device": dev.device_kind,
        "batch_size": batch,
        "rows": rows,
        "log_every": log_every,
        "results": [],
    }
    load = os.getloadavg()[0]
    print(
        f"dispatch_throughput on {out['backend']}: {out['device']}; batch {batch}, "
        f"{rows:,} rows, {steps} timed steps, load {load:.1f}",
        flush=True,
    )
    for name in args.models.split(","):
        model, tcfg = measure.model_for(cfg, name)
        spec = measure.spec_of(model, data, searched=name == "search")
        tcfg = dataclasses.replace(tcfg, batch_size=batch)
        for store in stores:
            for k in ks:
                r = {"model": name, **bench_one(spec, tcfg, data, k, store, steps, log_every)}
                out["results"].append(r)
                print(
                    f"{name:<8} K {k:>2} {store:<6}: {r['steps_per_s']:8.1f} steps/s "
                    f"{r['examples_per_s']:>12,.0f} examples/s (first record after "
                    f"{r['first_record_s']:.1f} s; load {os.getloadavg()[0]:.1f})",
                    flush=True,
                )
                if args.json:
                    args.json.write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
