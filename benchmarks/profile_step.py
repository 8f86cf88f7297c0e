"""Where a train step's time goes: XLA's own per-op timings of the compiled step, by op and by
kind, plus every matmul's shape and rate, and any whole-buffer copy of a table-sized array.

Command:
  python benchmarks/profile_step.py [--model search] [--batch-size 2048] [--vocab-rows N]
                                    [--steps 10] [--top 20] [--json out.json]

It sets XLA_FLAGS=--xla_cpu_enable_xprof_traceme=true (before JAX starts), runs the jitted step
under `jax.profiler.trace(..., create_perfetto_trace=True)` and sums each XLA op's trace events.
Op times are as the CPU runtime reports them: ops that run concurrently (e.g. an asynchronous
Eigen dot beside a fusion) overlap, so the per-op sum can exceed the step's wall time, and a
concurrent op's time can land on its neighbour. Use it to find what to fix (this is how a sort
in the row dedupe and a 40 MB per-step copy of its scratch showed up), then confirm with the
wall-clock suite (suite.py).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import gzip
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_cpu_enable_xprof_traceme=true"
).strip()

import jax  # after XLA_FLAGS is set
import measure
import numpy as np

from autoheri_jax.train.optim import make_optimizer
from autoheri_jax.train.step import init_state, make_update_fn

_RUNTIME = ("$", "ThunkExecutor", "SlinkyThreadPool", "PjitFunction", "ParseArguments")
_DOT = re.compile(
    r"(\w+)\[([\d,]*)\]\S* dot\(%(\S+), %(\S+)\), "
    r"lhs_contracting_dims=\{(\d*)\}, rhs_contracting_dims=\{(\d*)\}"
)
_SHAPE = re.compile(r"%(\S+) = \w+\[([\d,]*)\]")


def op_kind(name: str) -> str:
    """ynn_fusion.18 -> matmul, wrapped_scatter.2 -> wrapped_scatter, ..."""
    if name.startswith(("ynn_fusion", "xnn_fusion", "dot")):
        return "matmul"
    return re.sub(r"[._]\d+$", "", name)


def op_times(trace_dir: str, steps: int) -> dict[str, float]:
    """Milliseconds per step of every XLA op in the perfetto trace under `trace_dir`."""
    path = next(Path(trace_dir).rglob("*.trace.json.gz"))
    with gzip.open(path) as f:
        events = json.load(f)["traceEvents"]
    total: collections.Counter = collections.Counter()
    for e in events:
        if e.get("ph") == "X" and not e["name"].startswith(_RUNTIME):
            total[e["name"]] += e["dur"]
    return {k: v / 1e3 / steps for k, v in total.items()}


def matmuls(hlo: str, times: dict[str, float]) -> list[dict]:
    """Shape, form (NN / NT / TN) and GFLOP/s of every timed dot of the optimised HLO."""
    shapes = {k: [int(d) for d in v.split(",") if d] for k, v in _SHAPE.findall(hlo)}
    calls = dict(re.findall(r"%(\S+) = \S+ fusion\([^\n]*?calls=%([\w.\-]+)", hlo))
    out = []
    for name, ms in times.items():
        if op_kind(name) != "matmul":
            continue
        comp = calls.get(name)
        start = hlo.find(f"%{comp} (") if comp else hlo.find(f"%{name} = ")
        body = hlo[start : hlo.find("\n}\n", start)] if comp else hlo[start : hlo.find("\n", start)]
        m = _DOT.search(body)
        if start < 0 or not m:
            continue
        lhs, rhs = shapes.get(m.group(3)), shapes.get(m.group(4))
        if lhs is None or rhs is None:
            continue
        k = lhs[int(m.group(5))]
        flops = 2 * k * int(np.prod([int(d) for d in m.group(2).split(",") if d]))
        form = ("T" if m.group(5) == "0" else "N") + ("N" if m.group(6) == "0" else "T")
        out.append(
            {
                "op": name,
                "form": form,
                "lhs": lhs,
                "rhs": rhs,
                "ms": ms,
                "gflop_per_s": flops / (ms / 1e3) / 1e9,
            }
        )
    return sorted(out, key=lambda r: -r["ms"])


def table_copies(hlo: str, rows: int) -> list[str]:
    """Whole-buffer copies of arrays with a table-sized leading axis (O(vocabulary) a step)."""
    pat = re.compile(rf"= \w+\[{rows}(,\d+)?\]\S* copy\(")
    return [line.strip()[:160] for line in hlo.splitlines() if pat.search(line)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="search", choices=measure.MODELS)
    ap.add_argument("--batch-size", type=int, default=2048)
    ap.add_argument("--vocab-rows", type=int, default=0, help="scale the table (0: the config's)")
    ap.add_argument("--config", default="experiments/configs/default.py")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--top", type=int, default=20)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    cfg = measure.base_config(args.config)
    data = measure.train_data(cfg, max(4 * args.batch_size, 20_000))
    if args.vocab_rows:
        data = measure.scale_vocab(data, args.vocab_rows)
    mcfg, tcfg = measure.model_for(cfg, args.model)
    tcfg = dataclasses.replace(tcfg, batch_size=args.batch_size)
    spec = measure.spec_of(mcfg, data, searched=args.model == "search")
    opt = make_optimizer(tcfg)
    state = init_state(spec, tcfg, opt)
    rng = np.random.default_rng(0)
    batches = [
        jax.device_put(data.batch(rng.integers(0, data.num_rows, args.batch_size)))
        for _ in range(4)
    ]
    update = make_update_fn(spec, tcfg, opt).lower(state, batches[0]).compile()
    for i in range(3):
        state, _ = update(state, batches[i % 4])
    jax.block_until_ready(state)
    t0 = time.perf_counter()
    for i in range(args.steps):
        state, _ = update(state, batches[i % 4])
    jax.block_until_ready(state)
    wall_ms = (time.perf_counter() - t0) / args.steps * 1e3
    with tempfile.TemporaryDirectory() as tmp:
        with jax.profiler.trace(tmp, create_perfetto_trace=True):
            for i in range(args.steps):
                state, _ = update(state, batches[i % 4])
            jax.block_until_ready(state)
        times = op_times(tmp, args.steps)
    hlo = update.as_text()
    kinds: collections.Counter = collections.Counter()
    for name, ms in times.items():
        kinds[op_kind(name)] += ms
    dots = matmuls(hlo, times)
    copies = table_copies(hlo, spec.table_rows)

    print(
        f"{args.model} @ batch {args.batch_size}, {spec.table_rows:,} table rows, "
        f"load {os.getloadavg()[0]:.2f}"
    )
    print(
        f"wall {wall_ms:.2f} ms/step ({args.batch_size / wall_ms * 1e3:,.0f} ex/s); "
        f"sum of op times {sum(times.values()):.2f} ms/step (traced, overlapping)"
    )
    print("\nby kind (ms/step)")
    for kind, ms in kinds.most_common(args.top):
        print(f"  {ms:7.3f}  {kind}")
    print("\nmatmuls (form: N = as stored, T = transposed operand)")
    for d in dots[: args.top]:
        shape = f"{d['lhs']} x {d['rhs']}"
        print(f"  {d['ms']:7.3f} ms  {d['form']}  {shape:<28} {d['gflop_per_s']:7.1f} GFLOP/s")
    print("\ntop ops (ms/step)")
    for name, ms in sorted(times.items(), key=lambda x: -x[1])[: args.top]:
        print(f"  {ms:7.3f}  {name}")
    print(f"\ntable-sized copies: {len(copies)}")
    for c in copies:
        print(f"  {c}")
    if args.json:
        out = {
            "wall_ms": wall_ms,
            "ops_ms": times,
            "kinds_ms": dict(kinds),
            "matmuls": dots,
            "table_copies": copies,
            "args": vars(args),
        }
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    sys.exit(main())
