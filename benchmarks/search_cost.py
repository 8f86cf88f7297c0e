"""What a search method costs against the paper's: `autoheri search` then `autoheri retrain`,
per method, alternating, in fresh processes (the persistent XLA cache warm after the first).

Command:
  python benchmarks/search_cost.py [--config experiments/configs/study_base.py]
      [--methods paper,masked] [--seeds 0,1,2] [--json out.json] [--set key=value ...]

Why both commands: the masked search ends in a selection that trains none / the evidence's set
/ all with the retrain budget, and `retrain` then reuses those lanes as the derived model and
ESMM (and as every-edge-on where it is a baseline); the paper's search trains only its supernet
and `retrain` trains the derived model and the baselines afresh. So "search" alone charges the
masked search for training that replaces retrains, and "search + retrain" is the like-for-like
figure. Wall seconds per command (process start, data, compile, train), then the mean ratio of
each method to the first one. The load average is printed: on a shared machine only pairs in
one alternating run compare. Seeds set data.seed (a cost, not a result: any tuning seed).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STEPS = ("search", "retrain")


def timed(step: str, config: str, workdir: Path, overrides: list[str]) -> float:
    cmd = [
        sys.executable,
        "-m",
        "autoheri_jax",
        step,
        "--config",
        config,
        "--workdir",
        str(workdir),
        "--quiet",
    ]
    for o in overrides:
        cmd += ["--set", o]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return time.perf_counter() - t0


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="experiments/configs/study_base.py")
    ap.add_argument("--methods", default="paper,masked")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--set", action="append", default=[], dest="overrides")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    methods, seeds = args.methods.split(","), [int(s) for s in args.seeds.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            for method in methods:  # alternating: a load change hits every method alike
                wd = Path(tmp) / f"{method}_{seed}"
                sets = [f"edge_search.method={method}", f"data.seed={seed}", *args.overrides]
                row = {"method": method, "seed": seed}
                row |= {s: timed(s, args.config, wd, sets) for s in STEPS}
                row["load"] = os.getloadavg()[0]
                rows.append(row)
                print(
                    f"seed {seed} {method:8s} search {row['search']:6.1f} s  retrain "
                    f"{row['retrain']:6.1f} s  load {row['load']:.1f}",
                    flush=True,
                )
    base = methods[0]
    print(f"\nmean seconds over seeds {args.seeds}; ratio = method / {base}, seed by seed")
    print("| method | search s | search + retrain s | search ratio | search + retrain ratio |")
    print("| --- | --- | --- | --- | --- |")
    summary = {}
    for m in methods:
        mine = [r for r in rows if r["method"] == m]
        ref = [r for r in rows if r["method"] == base]
        both = lambda r: r["search"] + r["retrain"]
        s = sum(r["search"] for r in mine) / len(mine)
        sr = sum(both(r) for r in mine) / len(mine)
        ratio = sum(a["search"] / b["search"] for a, b in zip(mine, ref, strict=True)) / len(mine)
        ratio_all = sum(both(a) / both(b) for a, b in zip(mine, ref, strict=True)) / len(mine)
        summary[m] = {
            "search_s": s,
            "search_retrain_s": sr,
            "search_ratio": ratio,
            "search_retrain_ratio": ratio_all,
        }
        print(f"| {m} | {s:.1f} | {sr:.1f} | {ratio:.2f} | {ratio_all:.2f} |")
    if args.json:
        args.json.write_text(json.dumps({"runs": rows, "summary": summary}, indent=1))


if __name__ == "__main__":
    main()
