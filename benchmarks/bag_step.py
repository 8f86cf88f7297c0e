"""The Ali-CCP config's ESMM step (bag fields) against the default model's, on one machine.

Command:
  python benchmarks/bag_step.py --store DIR [--batch-size 2048] [--steps 20] [--repeats 5]
                                [--profile] [--json out.json]

DIR is an `autoheri prepare` store of raw-Ali-CCP-shaped data (benchmarks/scale_data.py, then
`autoheri prepare --data RAW --out DIR --min-count 10`). The default model's ESMM step, the
Ali-CCP one on the padded path (train.bag_slots=0) and with the config's bag_slots (or
`--bag-slots`) run with their batches on the device, alternated per repeat so drift on a
shared machine hits all (median of `--repeats` runs of `--steps` steps; ratios of medians).
The batch's bag statistics (real entries per bag field against the padded width, distinct rows
against the static bound) are printed beside. `--profile` adds XLA's per-op times of the
Ali-CCP step by kind (benchmarks/profile_step.py's trace reader).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

if "--profile" in sys.argv:
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_cpu_enable_xprof_traceme=true"
    ).strip()

import jax
import measure
import numpy as np

import autoheri_jax
from autoheri_jax.config import load_config
from autoheri_jax.data.sources import load_splits
from autoheri_jax.experiment import spec_for
from autoheri_jax.train import sparse_embedding as sparse_rows
from autoheri_jax.train.optim import make_optimizer
from autoheri_jax.train.step import init_state, make_update_fn

REPO = Path(autoheri_jax.__file__).resolve().parents[1]  # its configs: the code under test


def _setup(cfg, data, batch_size: int, bag_slots: float = 0.0):
    """The ESMM step of `cfg` on `data`, compiled, with 4 device batches; run(n) -> s/step."""
    model, tcfg = measure.model_for(cfg, "esmm")
    tcfg = dataclasses.replace(tcfg, batch_size=batch_size)
    if hasattr(tcfg, "bag_slots"):  # absent before train.bag_slots: the baseline's code
        tcfg = dataclasses.replace(tcfg, bag_slots=bag_slots)
    spec = spec_for(model, data)
    opt = make_optimizer(tcfg)
    state = init_state(spec, tcfg, opt)
    rng = np.random.default_rng(0)
    host = [data.batch(rng.integers(0, data.num_rows, batch_size)) for _ in range(4)]
    dev = [jax.device_put(x) for x in host]
    update = make_update_fn(spec, tcfg, opt).lower(state, dev[0]).compile()
    box = {"state": state, "i": 0}

    def run(n: int) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            box["i"] += 1
            box["state"], _ = update(box["state"], dev[box["i"] % 4])
        jax.block_until_ready(box["state"])
        return (time.perf_counter() - t0) / n

    run(3)
    return spec, host, run, update, box, dev


def _bag_stats(spec, host: list[dict]) -> dict:
    b = host[0]
    if "bag_mask" not in b:
        return {}
    mask = np.stack([h["bag_mask"] for h in host])  # [4, B, Fb, L]
    per_field = mask.sum(-1).mean(axis=(0, 1))
    ids = [
        np.unique(
            np.concatenate(
                [
                    (h["sparse"] + spec.field_offsets[None, : len(spec.vocab_sizes)]).ravel(),
                    (h["bag_ids"] + spec.field_offsets[None, len(spec.vocab_sizes) :, None])[
                        h["bag_mask"] > 0
                    ],
                ]
            )
        ).size
        for h in host
    ]
    return {
        "padded_width": int(mask.shape[-1]),
        "bag_fields": int(mask.shape[-2]),
        "real_entries_per_field": [round(float(x), 1) for x in per_field],
        "real_fraction": float(mask.mean()),
        "distinct_rows_per_batch": float(np.mean(ids)),
        "unique_row_bound": sparse_rows.unique_row_bound(spec, mask.shape[1], int(mask.shape[-1])),
        "table_rows": spec.table_rows,
    }


def _profile(update, box, dev, steps: int) -> dict:
    sys.path.insert(0, str(REPO / "benchmarks"))
    from profile_step import op_kind, op_times

    with tempfile.TemporaryDirectory() as tmp:
        with jax.profiler.trace(tmp, create_perfetto_trace=True):
            for i in range(steps):
                box["state"], _ = update(box["state"], dev[i % 4])
            jax.block_until_ready(box["state"])
        times = op_times(tmp, steps)
    kinds: collections.Counter = collections.Counter()
    for name, ms in times.items():
        kinds[op_kind(name)] += ms
    return {
        "kinds_ms": dict(kinds.most_common()),
        "ops_ms": dict(collections.Counter(times).most_common(25)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", type=Path, required=True)
    ap.add_argument("--batch-size", type=int, default=2048)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument(
        "--bag-slots",
        type=float,
        default=None,
        help="bag_slots of the second Ali-CCP step (default: config's)",
    )
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    default_cfg = measure.base_config("experiments/configs/default.py")
    default_data = measure.train_data(default_cfg, max(4 * args.batch_size, 20_000))
    cfg = load_config(
        str(REPO / "experiments/configs/aliccp.py"),
        ["data.source=files", f"data.path={args.store}"],
    )
    with tempfile.TemporaryDirectory() as tmp:
        bag_data = load_splits(cfg.data, Path(tmp), progress=False).train
    runs = {
        "default": _setup(default_cfg, default_data, args.batch_size),
        "aliccp_padded": _setup(cfg, bag_data, args.batch_size, 0.0),
    }
    slots = getattr(cfg.retrain, "bag_slots", 0.0) if args.bag_slots is None else args.bag_slots
    if slots:
        runs["aliccp_slots"] = _setup(cfg, bag_data, args.batch_size, slots)
    out_slots = slots
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(args.repeats):
        for k, r in runs.items():
            times[k].append(r[2](args.steps))
    out = {"batch_size": args.batch_size, "bag_slots": out_slots, "load": os.getloadavg()[0]}
    for k, ts in times.items():
        med = statistics.median(ts)
        out[k] = {
            "step_ms": 1e3 * med,
            "examples_per_s": args.batch_size / med,
            "runs_examples_per_s": [round(args.batch_size / t) for t in ts],
        }
    last = list(runs)[-1]
    out["ratio"] = out[last]["examples_per_s"] / out["default"]["examples_per_s"]
    out["bags"] = _bag_stats(runs["aliccp_padded"][0], runs["aliccp_padded"][1])
    for k in runs:
        print(
            f"{k:12s} ESMM step {out[k]['step_ms']:7.2f} ms  {out[k]['examples_per_s']:>9,.0f} "
            f"examples/s  runs {out[k]['runs_examples_per_s']}"
        )
    for k in list(runs)[1:]:
        r = out[k]["examples_per_s"] / out["default"]["examples_per_s"]
        print(f"ratio {k} / default: {r:.3f}")
    print(f"(load {out['load']:.2f})")
    print("bags:", json.dumps(out["bags"]))
    if args.profile:
        _, _, _, update, box, dev = runs[last]
        prof = _profile(update, box, dev, args.steps)
        out["profile"] = prof
        total = sum(prof["kinds_ms"].values())
        print(f"\nAli-CCP step by op kind (ms/step, traced, sum {total:.2f})")
        for kind, ms in list(prof["kinds_ms"].items())[:25]:
            print(f"  {ms:7.3f}  {100 * ms / total:5.1f}%  {kind}")
        print("top ops")
        for name, ms in prof["ops_ms"].items():
            print(f"  {ms:7.3f}  {name}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
