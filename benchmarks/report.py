"""Tables of the benchmark suite's figures, one per section.

Command (re-print a saved run):
  python benchmarks/report.py out.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

# (title, "header|header|...", the row's leading label columns, then dotted keys into a record)
TRAIN_KEYS = (
    "edges|device ex/s|best repeat ex/s|pipeline ex/s|input-only ex/s|ms/step|grad ms|unique ms|"
    "unique rows",
    (
        "edges",
        "device.examples_per_s",
        "device.best_examples_per_s",
        "pipeline.examples_per_s",
        "pipeline_only_examples_per_s",
        "device.step_ms",
        "breakdown_ms.grad",
        "breakdown_ms.unique",
        "unique_rows_per_batch",
    ),
)
VOCAB_KEYS = (
    "table rows|init s|ms/step|ex/s|grad ms|unique ms|page faults/step|peak RSS MB",
    (
        "table_rows",
        "init_s",
        "device.step_ms",
        "device.examples_per_s",
        "breakdown_ms.grad",
        "breakdown_ms.unique",
        "device.minor_page_faults_per_step",
        "peak_rss_mb",
    ),
)
EVAL_KEYS = (
    "batch|edges|predict ms|predict ex/s|predict_dataset ex/s|XLA kFLOP/ex",
    (
        "batch_size",
        "edges",
        "device.step_ms",
        "device.examples_per_s",
        "predict_dataset.examples_per_s",
        "xla_kflops",
    ),
)
ROOF_KEYS = (
    "kFLOP/ex|XLA kFLOP/ex|kB/ex|compute ex/s|bandwidth ex/s|bound|measured ex/s|% of bound|"
    "pipeline %|matmul floor ex/s|% of floor",
    (
        "kflops",
        "xla_kflops",
        "kbytes",
        "compute_bound_examples_per_s",
        "bandwidth_bound_examples_per_s",
        "limited_by",
        "measured_examples_per_s",
        "percent",
        "pipeline_percent",
        "matmul_floor_examples_per_s",
        "floor_percent",
    ),
)


def dig(record: dict, path: str, default: object = "-") -> object:
    for key in path.split("."):
        if not isinstance(record, dict) or key not in record:
            return default
        record = record[key]
    return record


def _cell(v: object) -> str:
    if isinstance(v, float):
        return f"{v:,.2f}" if abs(v) < 100 else f"{v:,.0f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def table(title: str, header: str, rows: list[list]) -> None:
    names = header.split("|")
    cells = [[_cell(c) for c in r] for r in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(names)]
    print(f"\n{title}")
    for r in [names, *cells]:
        padded = [c.rjust(w) for c, w in zip(r, widths, strict=True)]
        print("  ".join([r[0].ljust(widths[0]), *padded[1:]]))


def _rows(records: dict[str, dict], keys: tuple[str, ...]) -> list[list]:
    return [[label, *(dig(r, k) for k in keys)] for label, r in records.items()]


def _record(res: dict, name: str) -> dict:
    kind, *rest = name.split(":")
    node = res.get(kind, {})
    for key in rest:
        node = node.get(key, {}) if isinstance(node, dict) else {}
    return node


def print_report(res: dict) -> None:
    train = {f"{m} @ {b}": r for m, by_b in res["train"].items() for b, r in by_b.items()}
    table(
        "1. train step (median over repeats, and the least disturbed repeat; warm-up excluded)",
        "model @ batch|" + TRAIN_KEYS[0],
        _rows(train, TRAIN_KEYS[1]),
    )
    vocab = {f"{k} {int(v):,}": r for k, by_v in res["vocab"].items() for v, r in by_v.items()}
    table(
        f"2. search step vs vocabulary rows (batch {res['meta']['settings']['vocab_batch']})",
        "update, vocab rows|" + VOCAB_KEYS[0],
        _rows(vocab, VOCAB_KEYS[1]),
    )
    for k, q in res.get("vocab_step_ratio", {}).items():
        print(
            f"   {k}: step time at {q['largest_rows']:,} / {q['smallest_rows']:,} rows = "
            f"{q['ratio']:.2f}x (medians), {q.get('best_ratio', float('nan')):.2f}x (best repeats)"
        )
    evals = {
        m: {**r, "xla_kflops": dig(r, "xla_cost_per_step.flops", 0) / r["batch_size"] / 1e3}
        for m, r in res["eval"].items()
    }
    table("3. eval", "model|" + EVAL_KEYS[0], _rows(evals, EVAL_KEYS[1]))
    comp = {n: {**c, "rss": res["peak_rss_mb"].get(n, "-")} for n, c in res["compile"].items()}
    comp["machine"] = {"rss": res["peak_rss_mb"].get("machine", "-")}
    for n, c in comp.items():
        c["load"] = dig(res.get("load_per_config", {}), n, "-")
        c["cpu"] = dig(_record(res, n), "device.cpu_s_per_wall_s")
    table(
        "4-5. compile time (first call - steady call) and peak RSS of each process",
        "config|first call s|compile s|peak RSS MB|load (1 min)|CPU s / wall s",
        _rows(comp, ("first_call_s", "compile_s", "rss", "load", "cpu")),
    )
    m = res["machine"]
    if "peak_flops_per_s" in m:
        print("\n6. roofline: this machine")
        rates = {
            **m["matmul_flops_per_s"]["towers"],
            **{k: v for k, v in m["matmul_flops_per_s"].items() if k != "towers"},
        }
        for shape, rate in rates.items():
            print(f"   matmul {shape:<24} {rate / 1e9:8.1f} GFLOP/s")
        for k, bw in m["bandwidth_bytes_per_s"].items():
            print(f"   stream {k:<24} {bw / 1e9:8.1f} GB/s (read + write, {m['stream_bytes']:,} B)")
        faulted = m.get("fresh_output_page_faulted_mb_per_call", 0)
        print(f"   (a fresh output faults in {faulted:,.0f} MB of new pages per call)")
        g = m["gather"]
        print(
            f"   gather {g['rows']:,} random rows of a {g['table_rows']:,}-row table: "
            f"{g['rows_per_s'] / 1e6:.1f} M rows/s, {g['bytes_per_s'] / 1e9:.2f} GB/s"
        )
    roof = {
        n: {
            **b,
            "kflops": b["flops_per_example"] / 1e3,
            "xla_kflops": b.get("xla_flops_per_example", 0) / 1e3,
            "kbytes": b["bytes_per_example"] / 1e3,
            "percent": 100 * b["fraction_of_attainable"],
            "pipeline_percent": 100 * b.get("pipeline_fraction_of_attainable", 0) or "-",
            "floor_percent": 100 * b.get("fraction_of_matmul_floor", 0) or "-",
        }
        for n, b in res["roofline"].items()
    }
    table(
        "6. roofline per config (measured = device-resident batches)",
        "config|" + ROOF_KEYS[0],
        _rows(roof, ROOF_KEYS[1]),
    )
    meta = res["meta"]
    print(f"\nload: start [{meta['uptime_start']}]\n      end   [{meta['uptime_end']}]")
    for n, e in res.get("errors", {}).items():
        print(f"\nERROR {n}:\n{e}")


if __name__ == "__main__":
    print_report(json.loads(Path(sys.argv[1]).read_text()))
