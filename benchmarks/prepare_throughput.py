"""Throughput of prepare_aliccp_raw on a generated raw Ali-CCP-like data set.

Command:
  python benchmarks/prepare_throughput.py [--mb 200] [--chunk-rows 100000] [--json out.json]

Generates train + test raw files of about --mb MB in a temp dir (about 60 % train): skeleton rows
with 8 single-valued item fields plus the 210 / 853 bags (~12-20 features), common rows with the 9
user fields plus the 109_14 / 110_14 / 127_14 / 150_14 bags (~100-500 features, 150_14 the
longest), one common row per ~50 skeleton rows (1-99), ids drawn Zipf-like from a pool of up to
20k pre-formatted entries per field (realistic id ranges; values 1.0 or log-counts). Then runs
the conversion once and prints MB/s (raw input bytes) and skeleton rows/s for the whole prepare
(wall and this process's CPU time), the store size (total, its ratio to the raw size, and per
top-level directory: splits, the side.* user-bag tables, vocab), and each phase's wall time from
the manifest: common = both common files parsed (the test user bags written as the side.test
table meanwhile); skeleton = train skeleton parsed, joined, counted and spilled plus test skeleton
parsed, joined and written; vocab = vocabularies built and the train user bags written as the
side.train table; write = train / valid written.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from autoheri_jax.data.aliccp_raw import prepare_aliccp_raw

# field -> (id range, entries per row (lo, hi), value format)
ITEM = {"205": (4_000_000, 1, "1.0"), "206": (10_000, 1, "1.0"), "207": (500_000, 1, "1.0"),
        "216": (200_000, 1, "1.0"), "508": (10_000, 1, "v"), "509": (200_000, 1, "v"),
        "702": (200_000, 1, "v"), "301": (3, 1, "1.0"), "210": (100_000, (1, 6), "1.0"),
        "853": (100_000, (1, 4), "v")}  # fmt: skip
USER = {"101": (300_000, 1, "1.0"), "121": (100, 1, "1.0"), "122": (15, 1, "1.0"),
        "124": (3, 1, "1.0"), "125": (8, 1, "1.0"), "126": (4, 1, "1.0"), "127": (4, 1, "1.0"),
        "128": (3, 1, "1.0"), "129": (5, 1, "1.0"), "109_14": (10_000, (10, 50), "v"),
        "110_14": (500_000, (10, 100), "v"), "127_14": (200_000, (10, 100), "v"),
        "150_14": (50_000, (60, 300), "v")}  # fmt: skip
POOL = 20_000  # pre-formatted entries per field, drawn with a Zipf-like skew


def _pools(rng, spec):
    pools = {}
    for f, (ids, _, kind) in spec.items():
        raw = np.unique(rng.integers(0, ids, min(POOL, ids)))
        vals = np.round(np.log1p(rng.integers(1, 20, len(raw))), 5) if kind == "v" else None
        pools[f] = [f"{f}\x02{i}\x03{vals[k] if kind == 'v' else kind}" for k, i in enumerate(raw)]
    return pools


def _row(rng, spec, pools) -> list[str]:
    out = []
    for f, (_, n, _) in spec.items():
        k = 1 if n == 1 else int(rng.integers(n[0], n[1] + 1))
        p = pools[f]
        idx = np.minimum(rng.zipf(1.3, k), len(p)) - 1
        out.extend(p[i] for i in (idx if k > 1 else idx[:1]))
    return out


def generate(root: Path, mb: float, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    item_pools, user_pools = _pools(rng, ITEM), _pools(rng, USER)
    rows = {}
    for split, share in (("train", 0.6), ("test", 0.4)):
        budget, written, n_rows, sid = mb * share * 1e6, 0, 0, 0
        with (
            (root / f"common_features_{split}.csv").open("w") as cf,
            (root / f"sample_skeleton_{split}.csv").open("w") as sf,
        ):
            while written < budget:  # a batch: one user, ~50 impressions
                key = f"{rng.integers(0, 2**63):016x}"
                feats = _row(rng, USER, user_pools)
                line = f"{key},{len(feats)},{chr(1).join(feats)}\n"
                cf.write(line)
                written += len(line)
                lines = []
                for _ in range(int(rng.integers(1, 100))):
                    feats = _row(rng, ITEM, item_pools)
                    click = int(rng.random() < 0.04)
                    conv = int(click and rng.random() < 0.05)
                    lines.append(f"{sid},{click},{conv},{key},{len(feats)},{chr(1).join(feats)}\n")
                    sid += 1
                sf.writelines(lines)
                written += sum(map(len, lines))
                n_rows += len(lines)
        rows[split] = n_rows
    return rows


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=200.0, help="raw size to generate (MB)")
    ap.add_argument("--chunk-rows", type=int, default=100_000)
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="aliccp_bench_") as d:
        raw, out = Path(d) / "raw", Path(d) / "store"
        raw.mkdir()
        t = time.perf_counter()
        rows = generate(raw, args.mb)
        gen_s = time.perf_counter() - t
        sizes = {p.name: p.stat().st_size for p in sorted(raw.iterdir())}
        t, cpu = time.perf_counter(), time.process_time()
        m = prepare_aliccp_raw(raw, out, chunk_rows=args.chunk_rows, progress=True)
        total_s, cpu_s = time.perf_counter() - t, time.process_time() - cpu
        parts = {d.name: sum(p.stat().st_size for p in d.rglob("*") if p.is_file()) / 1e6
                 for d in sorted(out.iterdir()) if d.is_dir()}  # fmt: skip
        store_mb = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 1e6
    raw_mb = sum(sizes.values()) / 1e6
    skel = rows["train"] + rows["test"]
    res = {
        "raw_mb": round(raw_mb, 1),
        "files_mb": {k: round(v / 1e6, 1) for k, v in sizes.items()},
        "skeleton_rows": skel,
        "generate_s": round(gen_s, 1),
        "prepare_s": round(total_s, 2),
        "prepare_cpu_s": round(cpu_s, 2),  # this process only: robust to a busy machine
        "skeleton_rows_per_cpu_s": round(skel / cpu_s),
        "mb_per_s": round(raw_mb / total_s, 1),
        "skeleton_rows_per_s": round(skel / total_s),
        "phases_s": m["timing_s"],
        "store_mb": round(store_mb, 1),
        "store_over_raw": round(store_mb / raw_mb, 3),
        "store_parts_mb": {k: round(v, 1) for k, v in parts.items()},
        "splits": {k: v["rows"] for k, v in m["splits"].items()},
    }
    ph = m["timing_s"]
    print(f"raw {raw_mb:.1f} MB ({skel} skeleton rows), prepare {total_s:.1f} s: "
          f"{res['mb_per_s']} MB/s, {res['skeleton_rows_per_s']:,} skeleton rows/s")  # fmt: skip
    print(f"CPU time {cpu_s:.1f} s: {res['skeleton_rows_per_cpu_s']:,} skeleton rows per CPU-s")
    print("phases (wall s): " + ", ".join(f"{k} {v:.1f}" for k, v in ph.items()))
    print(f"store {store_mb:.0f} MB ({res['store_over_raw']:.2f}x raw): "
          + ", ".join(f"{k} {v:.0f}" for k, v in parts.items())
          + f" MB; splits {res['splits']}")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")
    return res


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
