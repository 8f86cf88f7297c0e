"""An Ali-CCP-sized run end to end, phase by phase: generate, prepare, search, retrain, evaluate.

Command:
  python benchmarks/scale.py --rows 10000000 --workdir /data/scale_10m [--search-steps 400]
      [--retrain-steps 400] [--json out.json]
  python benchmarks/scale.py --rows 20000 --workdir /tmp/scale_smoke --smoke   # the tests' check

DIR/raw is a raw-Ali-CCP-shaped directory of --rows impressions (benchmarks/scale_data.py,
reused when its world.json has the same rows), DIR/store its `autoheri prepare` store and
DIR/run the workdir of `experiments/configs/aliccp.py` with a fixed step budget
(search.max_steps, retrain.max_steps) and no baselines but ESMM: the search (the masked
supernet, the per-edge evidence and the validated selection's three-candidate batch, whose
lanes "none" and the chosen one are saved as ESMM and the derived model, so the retrain phase
trains nothing: their figures are the batch's, marked "lane"), and the evaluation of both on
the whole test split (exact AUC). Every phase runs in its own child process, so its peak RSS
(wait4's ru_maxrss) is its own. Printed per phase: wall seconds, rows/s (generate, prepare:
impressions written or read; evaluate: test rows x models scored) or training examples/s (the
loop's own figure from models/*/train.json), peak RSS, and the disk of what it wrote. Last,
`step` times the jitted train steps alone on the same store and model (measure.bench_train:
ESMM, the search step, the every-edge retrain; batches on the device, then fed by the grain
pipeline), and each end-to-end training rate is printed against its step's ("x step": the
issue's target is >= 0.9 at 84M; the retrained model is compared with the every-edge step, its
upper bound).
`--only step` reruns that phase alone on a DIR whose run exists.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "experiments" / "configs" / "aliccp.py"
SMOKE = [
    "model.hidden=[16,8]",
    "model.embed_dim=4",
    "search.batch_size=256",
    "retrain.batch_size=256",
    "eval_batch_size=4096",
    "data.min_count=2",
]


def _disk(path: Path) -> int:
    if not path.exists():
        return 0
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _resident_mb(pid: int) -> dict[str, float]:
    """The process's resident memory now, split into anonymous (heap, arrays) and file-backed
    (pages of memory-mapped files such as the store: clean, dropped under memory pressure)."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return {}
    kb = {
        k: float(v.split()[0])
        for k, v in (ln.split(":", 1) for ln in lines)
        if k in ("RssAnon", "RssFile")
    }
    return {k: v / 1024 for k, v in kb.items()}


def _child(cmd: list[str]) -> dict:
    """Runs `cmd`; -> wall seconds, its own peak RSS (MB, wait4's ru_maxrss) and the peaks of
    its anonymous and file-backed parts (sampled every 0.2 s). A failure stops the benchmark."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as log:  # a file, not a pipe: the child never blocks
        # prepended, as in device_check: carried wheels may sit on PYTHONPATH already
        path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH", "")]))
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": path},
        )
        peak = {"RssAnon": 0.0, "RssFile": 0.0}
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            for k, v in _resident_mb(proc.pid).items():
                peak[k] = max(peak[k], v)
            time.sleep(0.2)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            log.seek(0)
            tail = log.read()[-4000:]
            sys.exit(f"scale: {' '.join(cmd[:4])} failed ({proc.returncode}):\n{tail}")
    return {
        "seconds": time.perf_counter() - t0,
        "peak_rss_mb": usage.ru_maxrss / 1024,
        "peak_anon_mb": peak["RssAnon"],
        "peak_file_mb": peak["RssFile"],
    }


def _train_rates(run: Path, names: list[str]) -> dict:
    """Each model's training figures; "lane": the search batch's lane it was saved from
    (its figures the whole batch's, every lane's examples counted), or None (trained alone)."""
    out = {}
    for name in names:
        stats = json.loads((run / "models" / name / "train.json").read_text())
        out[name] = {k: stats[k] for k in ("steps", "seconds", "examples_per_s")}
        out[name]["lane"] = stats.get("source", {}).get("lane")
    return out


STEP_MODELS = {"esmm": "esmm", "autoheri_search": "search", "autoheri": "retrain"}  # run -> step


def step_bench(workdir: Path, smoke: bool) -> dict:
    """The step benchmark on DIR/store's train split (runs in the `step` child process)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import measure

    from autoheri_jax.config import load_config
    from autoheri_jax.data.sources import load_splits
    from autoheri_jax.experiment import spec_for

    sets = [*(SMOKE if smoke else []), "data.source=files", f"data.path={workdir / 'store'}"]
    cfg = load_config(str(CONFIG), sets)
    # the run's workdir already holds the store's integrity record: no second full hash
    train = load_splits(cfg.data, workdir / "run", progress=False).train
    out = {}
    for name in dict.fromkeys(STEP_MODELS.values()):
        model, tcfg = measure.model_for(cfg, name)
        spec = spec_for(model, train, searched=name == "search")
        res = measure.bench_train(
            spec, tcfg, train, steps=5 if smoke else 20, repeats=1 if smoke else 3
        )
        out[name] = {
            "examples_per_s": res["device"]["examples_per_s"],
            "pipeline_examples_per_s": res["pipeline"]["examples_per_s"],
        }
    return out


def _step_phase(workdir: Path, smoke: bool) -> dict:
    out_json = workdir / "step_bench.json"
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--step-bench",
        str(workdir),
        "--json",
        str(out_json),
        *(["--smoke"] if smoke else []),
    ]
    return {**_child(cmd), "disk": 0, "models": json.loads(out_json.read_text())}


def _with_step(phases: dict) -> None:
    """Each end-to-end training rate against its step's (in place)."""
    steps = phases["step"]["models"]
    for phase in ("search", "retrain"):
        for model, t in phases.get(phase, {}).get("training", {}).items():
            if t.get("lane") is not None:  # trained in the selection's batch, not alone
                continue
            ref = steps[STEP_MODELS[model]]
            t["x_step"] = t["examples_per_s"] / ref["examples_per_s"]
            t["x_pipeline_step"] = t["examples_per_s"] / ref["pipeline_examples_per_s"]


def run(rows: int, workdir: Path, search_steps: int, retrain_steps: int, smoke: bool) -> dict:
    raw, store, wd = workdir / "raw", workdir / "store", workdir / "run"
    py, done = sys.executable, workdir / "scale_phases.json"
    # generate and prepare run once per DIR: their figures are kept for the reruns' tables
    phases = (
        json.loads(done.read_text()) if done.exists() and (store / "manifest.json").exists() else {}
    )
    world = raw / "world.json"
    if not (world.exists() and json.loads(world.read_text())["rows"] == rows):
        shutil.rmtree(raw, ignore_errors=True)
        shutil.rmtree(store, ignore_errors=True)
        gen = _child(
            [py, str(ROOT / "benchmarks" / "scale_data.py"), "--rows", str(rows), "--out", str(raw)]
        )
        phases["generate"] = {**gen, "rows_per_s": rows / gen["seconds"], "disk": _disk(raw)}
    info = json.loads(world.read_text())
    if not (store / "manifest.json").exists():
        min_count = "2" if smoke else "10"
        prep = _child(
            [
                py,
                "-m",
                "autoheri_jax",
                "prepare",
                "--data",
                str(raw),
                "--out",
                str(store),
                "--no-progress",
                "--min-count",
                min_count,
            ]
        )
        phases["prepare"] = {**prep, "rows_per_s": rows / prep["seconds"], "disk": _disk(store)}
    done.write_text(json.dumps({k: phases[k] for k in ("generate", "prepare") if k in phases}))
    shutil.rmtree(wd, ignore_errors=True)
    budget = [
        f"search.max_steps={search_steps}",
        f"retrain.max_steps={retrain_steps}",
        'baselines=["esmm"]',
        "checkpoint.every_steps=1000000",
    ]
    sets = [x for s in budget + (SMOKE if smoke else []) for x in ("--set", s)]
    search = ["--config", str(CONFIG), "--data", str(store), *sets]  # later phases: config.json
    for phase in ("search", "retrain", "evaluate"):
        before = _disk(wd)
        args = ["--workdir", str(wd), "--no-progress", *(search if phase == "search" else [])]
        out = _child([py, "-m", "autoheri_jax", phase, *args])
        phases[phase] = {**out, "disk": _disk(wd) - before}
    phases["search"]["training"] = _train_rates(wd, ["autoheri_search"])
    phases["retrain"]["training"] = _train_rates(wd, ["autoheri", "esmm"])
    results = json.loads((wd / "results.json").read_text())
    test_rows = info["splits"]["test"]["rows"]
    scored = test_rows * len(results["models"])
    phases["evaluate"]["rows_per_s"] = scored / phases["evaluate"]["seconds"]
    return {
        "rows": rows,
        "raw_bytes": _disk(raw),
        "store_bytes": _disk(store),
        "phases": phases,
        "test_auc": {
            m: {
                task: v["auc"]
                for task, v in r["test"].items()
                if isinstance(v, dict) and "auc" in v
            }
            for m, r in results["models"].items()
        },
    }


def _print(out: dict) -> None:
    gb = 1e9
    print(
        f"rows {out['rows']:,}: raw {out['raw_bytes'] / gb:.2f} GB, "
        f"store {out['store_bytes'] / gb:.2f} GB"
    )
    print(
        f"{'phase':<9} {'seconds':>8} {'rows/s':>11} {'peak RSS MB':>12} {'anon MB':>8} "
        f"{'file MB':>8} {'disk GB':>8}  training"
    )
    for name, p in out["phases"].items():
        rate = f"{p['rows_per_s']:,.0f}" if "rows_per_s" in p else ""
        train = ", ".join(
            f"{m} {s['steps']} steps {s['examples_per_s']:,.0f} ex/s"
            + (f" ({s['x_step']:.2f}x step)" if "x_step" in s else "")
            + (f" (lane {s['lane']!r})" if s.get("lane") else "")
            for m, s in p.get("training", {}).items()
        )
        train = train or ", ".join(
            f"{m} {s['examples_per_s']:,.0f} ex/s (pipeline {s['pipeline_examples_per_s']:,.0f})"
            for m, s in p.get("models", {}).items()
        )
        anon, file = (
            f"{p[k]:>8.0f}" if k in p else f"{'':>8}" for k in ("peak_anon_mb", "peak_file_mb")
        )
        print(
            f"{name:<9} {p['seconds']:>8.1f} {rate:>11} {p['peak_rss_mb']:>12.0f} {anon} "
            f"{file} {p['disk'] / gb:>8.2f}  {train}"
        )
    for m, t in out["test_auc"].items():
        print(f"test AUC {m}: " + ", ".join(f"{k} {v:.4f}" for k, v in t.items() if v is not None))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, help="impressions, train + test")
    ap.add_argument("--workdir", type=Path)
    ap.add_argument("--search-steps", type=int, default=400)
    ap.add_argument("--retrain-steps", type=int, default=400)
    ap.add_argument("--smoke", action="store_true", help="a tiny model (the tests' check)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--only", choices=["step"], help="rerun one phase on DIR's finished run")
    ap.add_argument("--step-bench", type=Path, help=argparse.SUPPRESS)  # the step child's DIR
    args = ap.parse_args(argv)
    if args.step_bench:
        out = step_bench(args.step_bench, args.smoke)
        args.json.write_text(json.dumps(out, indent=1))
        return out
    if args.workdir is None or (args.rows is None and not args.only):
        ap.error("--workdir and --rows are required (--only needs --workdir alone)")
    kept = args.workdir / "scale_result.json"
    if not args.only:  # kept before the step phase: a failure there loses none of the run
        out = run(args.rows, args.workdir, args.search_steps, args.retrain_steps, args.smoke)
        kept.write_text(json.dumps(out, indent=1))
    elif not kept.exists():
        sys.exit(f"scale: --only {args.only}: {kept} not found (run every phase first)")
    out = json.loads(kept.read_text())
    out["phases"]["step"] = _step_phase(args.workdir, args.smoke)
    _with_step(out["phases"])
    kept.write_text(json.dumps(out, indent=1))
    _print(out)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
