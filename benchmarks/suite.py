"""The benchmark suite: train and eval throughput, vocabulary scaling, compile time, memory,
and a roofline of this machine. Figures, not tests.

Command:
  python benchmarks/suite.py [--quick | --smoke] [--json out.json] [--only train,vocab]

Every configuration runs in a fresh subprocess (`suite.py --one NAME`), so its peak RSS is its
own. Configurations (full mode; --quick: batch 2048, vocab 100k and 1M, fewer steps):

  machine              matmul rates (tower shapes, a square peak), streaming and gather bandwidth
  train:M:B            jitted update of model M at batch B: device-resident batches and the real
                       input pipeline; M = esmm (no edges), search (default config: hierarchical,
                       searched gates), retrain (hierarchical_all_on, the largest derived model)
  vocab:K:V            the search step at batch 2048 over a V-row table, K = sparse (lazy Adam on
                       touched rows, the default) or dense (optax Adam over the whole table)
  eval:M               make_predict_fn at the eval batch, and predict_dataset end to end

Model: experiments/configs/default.py (23 fields, embed 16, towers 128-64-32) on simulated
impressions; --smoke uses experiments/configs/smoke.py and tiny sizes (seconds, for the tests).
Timings are medians over repeats, warm-up excluded, blocked with jax.block_until_ready; compile
time is the first call minus the steady step. The roofline's bounds are examples/s =
min(peak FLOP/s / FLOPs per example, bandwidth / bytes per example); see roofline.py for how
work is counted. Each train config also gets a matmul floor: its step's tower matmuls alone
(forward, dX, dW at the step's shapes), jitted together and timed, as examples/s. The machine
may be shared: the load average is recorded beside the figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import report

MODELS = ("esmm", "search", "retrain")
MODES = {
    "full": {
        "config": "experiments/configs/default.py",
        "data_rows": 500_000,
        "batches": (512, 2048, 8192),
        "examples_per_run": 65_536,  # timed steps per repeat = this / batch (at least min_steps)
        "min_steps": 4,
        "repeats": 5,
        "breakdown_batches": (2048,),
        "vocab_rows": (100_000, 1_000_000, 10_000_000),
        "vocab_batch": 2048,
        "vocab_steps": 20,
        "vocab_repeats": 5,
        "eval_batch": 8192,
        "eval_rows": 65_536,
        "eval_steps": 4,
        "eval_repeats": 5,
        "machine": {
            "batch_size": 2048,
            "square": 4096,
            "stream_bytes": 1 << 30,
            "gather_table_rows": 10_000_000,
            "gather_rows": 1 << 20,
            "repeats": 5,
        },
    },
}
MODES["quick"] = {
    **MODES["full"],
    "data_rows": 100_000,
    "batches": (2048,),
    "examples_per_run": 20_480,
    "repeats": 3,
    "vocab_rows": (100_000, 1_000_000),
    "vocab_steps": 10,
    "eval_rows": 32_768,
    "eval_repeats": 3,
    "machine": {
        **MODES["full"]["machine"],
        "square": 2048,
        "stream_bytes": 1 << 28,
        "gather_table_rows": 1_000_000,
        "repeats": 3,
    },
}
MODES["smoke"] = {
    **MODES["full"],
    "config": "experiments/configs/smoke.py",
    "compile_cache": True,
    # every config in this one process (one JAX start-up, shared compilations): the timings
    # and the per-config peak RSS (then cumulative) mean nothing here anyway
    "in_process": True,
    "data_rows": 4096,
    "batches": (128,),
    "examples_per_run": 256,
    "min_steps": 2,
    "repeats": 1,
    "breakdown_batches": (128,),
    "vocab_rows": (25_000, 50_000),
    "vocab_batch": 128,
    "vocab_steps": 2,
    "vocab_repeats": 1,
    "eval_models": ("retrain",),
    "eval_batch": 256,
    "eval_rows": 512,
    "eval_steps": 2,
    "eval_repeats": 1,
    "machine": {
        "batch_size": 128,
        "square": 128,
        "stream_bytes": 1 << 22,
        "gather_table_rows": 10_000,
        "gather_rows": 4096,
        "repeats": 1,
    },
}


def plan(s: dict) -> list[str]:
    names = ["machine"]
    names += [f"train:{m}:{b}" for b in s["batches"] for m in MODELS]
    names += [f"vocab:{k}:{v}" for v in s["vocab_rows"] for k in ("sparse", "dense")]
    names += [f"eval:{m}" for m in s.get("eval_models", MODELS)]
    return names


# ----------------------------------------------------------------------------- one config


def run_one(name: str, s: dict) -> dict:
    """Measures configuration `name` in this process (the child side of the suite)."""
    import jax
    import measure
    import roofline

    if s.get("compile_cache"):  # smoke only: compile times are then meaningless, runs fast
        cache = os.environ.get("AUTOHERI_JAX_CACHE", str(Path.home() / ".cache/autoheri_jax/xla"))
        if cache != "off":
            jax.config.update("jax_compilation_cache_dir", cache)
            jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    load0, t0 = os.getloadavg(), time.perf_counter()
    cfg = measure.base_config(s["config"])
    kind, *rest = name.split(":")
    work = None
    if kind == "machine":
        data = measure.train_data(cfg, 4 * s["machine"]["batch_size"])
        spec = measure.spec_of(measure.model_for(cfg, "retrain")[0], data)
        out = roofline.measure_machine(spec, **s["machine"])
    elif kind in ("train", "vocab"):
        data = measure.train_data(cfg, s["data_rows"])
        if kind == "train":
            model, batch, sparse = rest[0], int(rest[1]), True
        else:
            model, batch, sparse = "search", s["vocab_batch"], rest[0] == "sparse"
            data = measure.scale_vocab(data, int(rest[1]))
        mcfg, tcfg = measure.model_for(cfg, model)
        tcfg = dataclasses.replace(tcfg, batch_size=batch, sparse_embeddings=sparse)
        spec = measure.spec_of(mcfg, data, searched=model == "search")
        if kind == "train":
            steps, repeats = max(s["min_steps"], s["examples_per_run"] // batch), s["repeats"]
            more = {"breakdown": batch in s["breakdown_batches"]}
        else:  # the pipeline does not depend on the table size
            steps, repeats = s["vocab_steps"], s["vocab_repeats"]
            more = {"breakdown": True, "pipeline": False}
        out = measure.bench_train(spec, tcfg, data, steps=steps, repeats=repeats, **more)
        out["matmul_floor_s"] = roofline.step_matmul_seconds(spec, batch, repeats)
        u = out["unique_rows_per_batch"]
        work = {
            "flops": roofline.flops_per_example(spec, batch, u, sparse),
            "bytes": roofline.bytes_per_example(spec, batch, u, sparse),
        }
    elif kind == "eval":
        data = measure.train_data(cfg, s["eval_rows"])
        spec = measure.spec_of(measure.model_for(cfg, rest[0])[0], data, rest[0] == "search")
        out = measure.bench_eval(
            spec, data, s["eval_batch"], steps=s["eval_steps"], repeats=s["eval_repeats"]
        )
        work = {
            "flops": roofline.flops_per_example(spec, 1, 0, True, train=False),
            "bytes": roofline.bytes_per_example(spec, 1, 0, True, train=False),
        }
    else:
        raise SystemExit(f"unknown configuration {name!r}")
    if work is not None:
        xla = out.get("xla_cost_per_step", {})
        for k, v in xla.items():
            if k != "error":
                work[f"xla_{k.replace(' accessed', '')}_per_example"] = v / out["batch_size"]
        out["work_per_example"] = work
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["seconds"] = time.perf_counter() - t0
    out["loadavg"] = {"start": list(load0), "end": list(os.getloadavg())}
    out["jax"] = {"version": jax.__version__, "backend": jax.default_backend()}
    return out


# ----------------------------------------------------------------------------- orchestration


def _child(name: str, mode: str, tmp: str, timeout: float) -> dict:
    path = Path(tmp) / (name.replace(":", "_") + ".json")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--one", name, "--mode", mode]
    try:
        p = subprocess.run(
            [*cmd, "--out", str(path)], capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if p.returncode != 0 or not path.is_file():
        return {"error": f"exit {p.returncode}: {(p.stderr or p.stdout)[-2000:]}"}
    return json.loads(path.read_text())


def _last_error_line(text: str) -> str:
    lines = [
        x for x in text.splitlines() if x.strip() and not x.startswith((" ", "For simp", "---"))
    ]
    return "ERROR " + (lines[-1] if lines else text[-200:])


def _in_process(name: str, s: dict) -> dict:
    try:
        return run_one(name, s)
    except Exception:  # reported like a failed child, so the other configs still run
        return {"error": traceback.format_exc()}


def run_all(names: list[str], mode: str, jobs: int, timeout: float) -> dict[str, dict]:
    out: dict[str, dict] = {}
    s = MODES[mode]
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(jobs) as pool:
        if s.get("in_process"):
            results = ((n, lambda n=n: _in_process(n, s)) for n in names)
        else:
            futures = {n: pool.submit(_child, n, mode, tmp, timeout) for n in names}
            results = ((n, f.result) for n, f in futures.items())
        for i, (n, result) in enumerate(results, 1):
            out[n] = r = result()
            status = _last_error_line(r["error"]) if "error" in r else f"{r['seconds']:.1f} s"
            print(f"[{i}/{len(names)}] {n:<24} {status}", flush=True)
    return out


def assemble(raw: dict[str, dict]) -> dict:
    import roofline

    res = {"machine": raw.get("machine", {}), "train": {}, "vocab": {}, "eval": {}}
    res.update(compile={}, peak_rss_mb={}, load_per_config={}, roofline={}, errors={})
    machine = res["machine"] if "peak_flops_per_s" in res["machine"] else None
    for name, r in raw.items():
        if "error" in r:
            res["errors"][name] = r["error"]
            continue
        kind, *rest = name.split(":")
        res["peak_rss_mb"][name] = r["peak_rss_mb"]
        res["load_per_config"][name] = r["loadavg"]["start"][0]
        if kind == "machine":
            continue
        res[kind].setdefault(rest[0], {})[rest[1] if len(rest) > 1 else "value"] = r
        res["compile"][name] = {"first_call_s": r["first_call_s"], "compile_s": r["compile_s"]}
        if machine is not None and "work_per_example" in r:
            w = r["work_per_example"]
            floor = r["batch_size"] / r["matmul_floor_s"] if r.get("matmul_floor_s") else None
            measured = r["device"]["examples_per_s"]
            b = roofline.bound(w["flops"]["total"], w["bytes"]["total"], machine, measured, floor)
            b.update({k: v for k, v in w.items() if k.startswith("xla_")})
            if "pipeline" in r:
                b["pipeline_fraction_of_attainable"] = (
                    r["pipeline"]["examples_per_s"] / b["attainable_examples_per_s"]
                )
            res["roofline"][name] = b
    res["eval"] = {m: v["value"] for m, v in res["eval"].items()}
    for k, by_rows in res["vocab"].items():
        rows = sorted(by_rows, key=int)
        if len(rows) > 1:
            big, small = by_rows[rows[-1]]["device"], by_rows[rows[0]]["device"]
            res.setdefault("vocab_step_ratio", {})[k] = {
                "largest_rows": int(rows[-1]),
                "smallest_rows": int(rows[0]),
                "ratio": big["step_ms"] / small["step_ms"],  # of medians
                "best_ratio": big["best_step_ms"] / small["best_step_ms"],  # of best repeats
            }
    return res


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "load average: " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    size = ap.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="batch 2048, vocab 100k / 1M")
    size.add_argument("--smoke", action="store_true", help="tiny model, seconds (tests)")
    ap.add_argument("--json", default=None, help="write every figure here")
    ap.add_argument("--only", default="", help="comma-separated name prefixes: train,vocab,...")
    ap.add_argument("--batches", default="", help="train batch sizes, e.g. 2048,8192")
    ap.add_argument("--jobs", type=int, default=0, help="configs at once (default 1; smoke 2)")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per configuration")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--mode", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    mode = args.mode or ("smoke" if args.smoke else "quick" if args.quick else "full")
    s = MODES[mode]
    if args.batches:
        s = {**s, "batches": tuple(int(b) for b in args.batches.split(","))}
    if args.one:
        Path(args.out).write_text(json.dumps(run_one(args.one, s), indent=1))
        return
    names = plan(s)
    if args.only:
        keep = ("machine", *args.only.split(","))
        names = [n for n in names if n.startswith(keep)]
    up0, t0 = _uptime(), time.perf_counter()
    print(f"benchmark suite ({mode}): {len(names)} configurations; {up0}", flush=True)
    raw = run_all(names, mode, args.jobs or s.get("jobs", 1), args.timeout)
    res = {
        "meta": {
            "mode": mode,
            "settings": s,
            "configs": names,
            "cpus": os.cpu_count(),
            "uptime_start": up0,
            "uptime_end": _uptime(),
            "seconds": time.perf_counter() - t0,
        },
        **assemble(raw),
    }
    first = next((r for r in raw.values() if "jax" in r), {})
    res["meta"]["jax"] = first.get("jax")
    report.print_report(res)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
        print(f"wrote {args.json}")
    if res["errors"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
