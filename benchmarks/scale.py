"""An Ali-CCP-sized run end to end, phase by phase: generate, prepare, search, retrain, evaluate.

Command:
  python benchmarks/scale.py --rows 10000000 --workdir /data/scale_10m [--search-steps 400]
      [--retrain-steps 400] [--json out.json]
  python benchmarks/scale.py --rows 20000 --workdir /tmp/scale_smoke --smoke   # the tests' check

DIR/raw is a raw-Ali-CCP-shaped directory of --rows impressions (benchmarks/scale_data.py,
reused when its world.json has the same rows), DIR/store its `autoheri prepare` store and
DIR/run the workdir of `experiments/configs/aliccp.py` with a fixed step budget
(search.max_steps, retrain.max_steps) and no baselines but ESMM: the search (the masked
supernet, the per-edge evidence and the validated selection's three-candidate batch), the
retrain of the chosen architecture and ESMM, and the evaluation of both on the whole test
split (exact AUC). Every phase runs in its own child process, so its peak RSS (wait4's
ru_maxrss) is its own. Printed per phase: wall seconds, rows/s (generate, prepare: impressions
written or read; evaluate: test rows x models scored) or training examples/s (the loop's own
figure from models/*/train.json), peak RSS, and the disk of what it wrote.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "experiments" / "configs" / "aliccp.py"
SMOKE = ["model.hidden=[16,8]", "model.embed_dim=4", "search.batch_size=256",
         "retrain.batch_size=256", "eval_batch_size=4096", "data.min_count=2"]  # fmt: skip


def _disk(path: Path) -> int:
    if not path.exists():
        return 0
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _child(cmd: list[str]) -> dict:
    """Runs `cmd`; -> wall seconds and its own peak RSS (MB). A failure stops the benchmark."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"scale: {' '.join(cmd[:4])} failed ({proc.returncode}):\n{out[-4000:]}")
    return {"seconds": time.perf_counter() - t0, "peak_rss_mb": usage.ru_maxrss / 1024}


def _train_rates(run: Path, names: list[str]) -> dict:
    out = {}
    for name in names:
        stats = json.loads((run / "models" / name / "train.json").read_text())
        out[name] = {k: stats[k] for k in ("steps", "seconds", "examples_per_s")}
    return out


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
        gen = _child([py, str(ROOT / "benchmarks" / "scale_data.py"), "--rows", str(rows),
                      "--out", str(raw)])  # fmt: skip
        phases["generate"] = {**gen, "rows_per_s": rows / gen["seconds"], "disk": _disk(raw)}
    info = json.loads(world.read_text())
    if not (store / "manifest.json").exists():
        min_count = "2" if smoke else "10"
        prep = _child([py, "-m", "autoheri_jax", "prepare", "--data", str(raw), "--out",
                       str(store), "--no-progress", "--min-count", min_count])  # fmt: skip
        phases["prepare"] = {**prep, "rows_per_s": rows / prep["seconds"], "disk": _disk(store)}
    done.write_text(json.dumps({k: phases[k] for k in ("generate", "prepare") if k in phases}))
    shutil.rmtree(wd, ignore_errors=True)
    budget = [f"search.max_steps={search_steps}", f"retrain.max_steps={retrain_steps}",
              "baselines=[\"esmm\"]", "checkpoint.every_steps=1000000"]  # fmt: skip
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
    print(f"rows {out['rows']:,}: raw {out['raw_bytes'] / gb:.2f} GB, "
          f"store {out['store_bytes'] / gb:.2f} GB")  # fmt: skip
    print(
        f"{'phase':<9} {'seconds':>8} {'rows/s':>11} {'peak RSS MB':>12} {'disk GB':>8}  training"
    )
    for name, p in out["phases"].items():
        rate = f"{p['rows_per_s']:,.0f}" if "rows_per_s" in p else ""
        train = ", ".join(f"{m} {s['steps']} steps {s['examples_per_s']:,.0f} ex/s"
                          for m, s in p.get("training", {}).items())  # fmt: skip
        print(f"{name:<9} {p['seconds']:>8.1f} {rate:>11} {p['peak_rss_mb']:>12.0f} "
              f"{p['disk'] / gb:>8.2f}  {train}")  # fmt: skip
    for m, t in out["test_auc"].items():
        print(f"test AUC {m}: " + ", ".join(f"{k} {v:.4f}" for k, v in t.items() if v is not None))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, required=True, help="impressions, train + test")
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--search-steps", type=int, default=400)
    ap.add_argument("--retrain-steps", type=int, default=400)
    ap.add_argument("--smoke", action="store_true", help="a tiny model (the tests' check)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    out = run(args.rows, args.workdir, args.search_steps, args.retrain_steps, args.smoke)
    _print(out)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
