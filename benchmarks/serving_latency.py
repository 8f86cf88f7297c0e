"""What a service pays for an exported model: import cost, load time and latency per batch.

  python benchmarks/serving_latency.py --workdir runs/default        # exports its autoheri model
  python benchmarks/serving_latency.py --export exports/default      # an existing export

Every figure comes from fresh interpreters that import only autoheri_jax.serving.runtime
(numpy + jax; no training module), the way a service would:

  import       seconds to `import autoheri_jax.serving.runtime` (jax's import included), the
               median of --imports fresh processes
  load         seconds of `load(EXPORT)`: hashes, deserialising the StableHLO, params to device
  first call   per batch size: the first `score` of that size (compilation, then the call);
               the runtime sets no persistent XLA cache, so this is a cold compile
  latency      per batch size: median and p90 over --repeats calls of `score` on raw id
               columns (id mapping in numpy + the exported call), in ms, and rows/s

Inputs are random in-vocabulary raw ids of the export's schema (and uniform dense values).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

_CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
from autoheri_jax.serving.runtime import load
t_import = time.perf_counter() - t0
if len(sys.argv) < 2:
    print(json.dumps({"import_s": t_import})); sys.exit(0)
import numpy as np
export, batches, repeats = sys.argv[1], [int(b) for b in sys.argv[2].split(",")], int(sys.argv[3])
t0 = time.perf_counter()
model = load(export)
t_load = time.perf_counter() - t0
rng = np.random.default_rng(0)
def columns(n):
    s = model.schema
    cols = {}
    for f in s["fields"]:
        v = model.vocabs[f["name"]]
        raw = v.ids if v.kind == "table" else np.arange(v.size)
        cols[f["name"]] = raw[rng.integers(0, len(raw), n)] if len(raw) else np.zeros(n, int)
    for b in s["bag_fields"]:
        v = model.vocabs[b["name"]]
        raw = v.ids if v.kind == "table" else np.arange(v.size)
        cols[b["name"]] = [raw[rng.integers(0, len(raw), 3)] for _ in range(n)]
    for d in s["dense"]:
        cols[d] = rng.random(n, dtype=np.float32)
    return cols
out = {"import_s": t_import, "load_s": t_load, "batches": {}}
for b in batches:
    cols = columns(b)
    t0 = time.perf_counter()
    model.score(cols)
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model.score(cols)
        times.append(time.perf_counter() - t0)
    times.sort()
    med = times[len(times) // 2]
    out["batches"][b] = {"first_call_s": first, "median_ms": 1e3 * med,
                         "p90_ms": 1e3 * times[int(0.9 * (len(times) - 1))],
                         "rows_per_s": b / med}
mods = sorted(m for m in sys.modules if m.startswith("autoheri_jax"))
out["autoheri_modules"] = mods
out["platform"] = model.exported.platforms
print(json.dumps(out))
"""


def _child(*args: str) -> dict:
    env = os.environ | {"PYTHONPATH": str(REPO)}
    p = subprocess.run(
        [sys.executable, "-c", _CHILD, *args], env=env, capture_output=True, text=True, timeout=900
    )
    if p.returncode:
        raise SystemExit(f"benchmark child failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--workdir", help="an `autoheri run` workdir: its model is exported first")
    src.add_argument("--export", help="an existing export directory")
    ap.add_argument("--model", default="autoheri")
    ap.add_argument("--batches", default="1,64,4096")
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--imports", type=int, default=5, help="fresh processes timing the import")
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        export = args.export
        if export is None:
            sys.path.insert(0, str(REPO))
            from autoheri_jax.exporting import export_workdir

            export = str(export_workdir(args.workdir, args.model, Path(tmp) / "export"))
        imports = [_child()["import_s"] for _ in range(args.imports)]
        res = _child(export, args.batches, str(args.repeats))
        size = sum(p.stat().st_size for p in Path(export).iterdir())
    res["import_s_runs"] = imports
    res["import_s"] = statistics.median(imports)
    res["export_mb"] = size / 1e6
    what = args.export or f"{args.workdir} (model {args.model})"
    print(f"export: {what}, {size / 1e6:.1f} MB")
    print(
        f"import autoheri_jax.serving.runtime: {res['import_s']:.2f} s (median of "
        f"{len(imports)} fresh processes: {', '.join(f'{t:.2f}' for t in imports)})"
    )
    print(f"load (hashes, StableHLO, params to device): {res['load_s']:.2f} s")
    print(f"autoheri_jax modules imported: {res['autoheri_modules']}")
    print(f"{'batch':>6} {'first call s':>13} {'median ms':>10} {'p90 ms':>8} {'rows/s':>11}")
    for b, r in res["batches"].items():
        print(
            f"{b:>6} {r['first_call_s']:>13.3f} {r['median_ms']:>10.3f} {r['p90_ms']:>8.3f} "
            f"{r['rows_per_s']:>11,.0f}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
