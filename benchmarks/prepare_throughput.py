"""Throughput of `autoheri prepare` on generated data: raw Ali-CCP, and a torch-rechub Ali-CCP CSV
directory next to parse-only references (pandas.read_csv if installed, pyarrow.csv.read_csv).

Command:
  python benchmarks/prepare_throughput.py [--mb 200] [--rechub-mb 200] [--esmm-mb 100]
                                          [--only raw|rechub|esmm] [--esmm-python]
                                          [--raw-engine arrow|python]
                                          [--chunk-rows 100000] [--json out.json]

Each conversion and each reference runs in a fresh child process (spawned), so its peak RSS
(ru_maxrss) is its own. torch-rechub: a train / val / test directory of about --rechub-mb MB
(72 / 14 / 14 %, ~117 bytes a row, the real train file has 149): labels at 4 % clicks and 5 % of
them purchases, 23 Zipf-like ids per row (ranges like the real vocabularies), 8 dense values with 4
decimals; prepared with valid_fraction 0.1 (the val file wins); MB/s over the whole directory,
the references over the train file alone, read the way a user would (pandas / pyarrow default
type inference, all cores).

Raw Ali-CCP: generates train + test raw files of about --mb MB in a temp dir (about 60 % train):
skeleton rows with 8 single-valued item fields plus the 210 / 853 bags (~12-20 features), common
rows with the 9 user fields plus the 109_14 / 110_14 / 127_14 / 150_14 bags (~100-500 features,
150_14 the longest), one common row per ~50 skeleton rows (1-99), ids drawn Zipf-like from a pool
of up to 20k pre-formatted entries per field (realistic id ranges; values 1.0 or log-counts). Then
runs the conversion once and prints MB/s (raw input bytes) and skeleton rows/s for the whole
prepare (wall and the converting process's CPU time), the store size (total, its ratio to the raw
size, and per top-level directory: splits, the side.* user-bag tables, vocab), and each phase's
wall time from the manifest: common = both common files parsed (the test user bags written as the
side.test table meanwhile); skeleton = train skeleton parsed, joined, counted and spilled plus test
skeleton parsed, joined and written; vocab = vocabularies built and the train user bags written as
the side.train table; write = train / valid written. --raw-engine python times the exact
per-line parser (the engine before the block fast path).

paddle_esmm: a train.txt / test.txt directory of about --esmm-mb MB (70 / 30 %) of
`sample_id,click,conversion,field:id,...` lines: the 18 single-valued fields, 1-5 210 and 10-120
150_14 tokens (~1.1 kB a line), ids Zipf-like from pools of 5k; converted with valid_fraction
0.1, MB/s over the directory; --esmm-python also times engine="python" (the per-row reference).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from autoheri_jax.data.aliccp_raw import prepare_aliccp_raw
from autoheri_jax.data.formats import _LAYOUTS, convert_processed

RECHUB = _LAYOUTS["rechub_aliccp"]
RECHUB_TOP = [
    300_000,
    100,
    15,
    3,
    8,
    4,
    4,
    3,
    5,
    400_000,
    10_000,
    500_000,
    100_000,
    200_000,
    10_000,
    200_000,
    200_000,
    100_000,
    3,
    10_000,
    500_000,
    200_000,
    50_000,
]

# field -> (id range, entries per row (lo, hi), value format)
ITEM = {
    "205": (4_000_000, 1, "1.0"),
    "206": (10_000, 1, "1.0"),
    "207": (500_000, 1, "1.0"),
    "216": (200_000, 1, "1.0"),
    "508": (10_000, 1, "v"),
    "509": (200_000, 1, "v"),
    "702": (200_000, 1, "v"),
    "301": (3, 1, "1.0"),
    "210": (100_000, (1, 6), "1.0"),
    "853": (100_000, (1, 4), "v"),
}
USER = {
    "101": (300_000, 1, "1.0"),
    "121": (100, 1, "1.0"),
    "122": (15, 1, "1.0"),
    "124": (3, 1, "1.0"),
    "125": (8, 1, "1.0"),
    "126": (4, 1, "1.0"),
    "127": (4, 1, "1.0"),
    "128": (3, 1, "1.0"),
    "129": (5, 1, "1.0"),
    "109_14": (10_000, (10, 50), "v"),
    "110_14": (500_000, (10, 100), "v"),
    "127_14": (200_000, (10, 100), "v"),
    "150_14": (50_000, (60, 300), "v"),
}
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


def generate_rechub(root: Path, mb: float, seed: int = 0) -> dict:
    """A torch-rechub Ali-CCP CSV directory of about mb MB (~117 bytes a row); rows per file."""
    import pyarrow as pa
    import pyarrow.csv as pcsv

    rng, rows = np.random.default_rng(seed), {}
    for name, share in (("train", 0.72), ("val", 0.14), ("test", 0.14)):
        n = rows[name] = int(mb * share * 1e6 / 117)
        path = root / f"ali_ccp_{name}.csv"
        path.write_text(",".join(RECHUB.header) + "\n")
        for s in range(0, n, 250_000):  # in pieces: bounded memory
            k = min(250_000, n - s)
            click = (rng.random(k) < 0.04).astype(np.int8)
            cols = {"click": click, "purchase": click & (rng.random(k) < 0.05)}
            for f, top in zip(RECHUB.sparse, RECHUB_TOP, strict=True):
                cols[f] = np.minimum(rng.zipf(1.3, k), top) - 1
            cols |= {f: np.round(rng.random(k), 4) for f in RECHUB.dense}
            opts = pcsv.WriteOptions(include_header=False, quoting_style="none")
            with path.open("ab") as fh:
                pcsv.write_csv(pa.table(cols), fh, write_options=opts)
    return rows


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _timed(what: str, src: str, out: str, chunk_rows: int) -> dict:
    """Runs one conversion or reference in this (child) process: seconds, CPU s, peak MB, rows."""
    if what == "pandas":
        import pandas  # before the clock starts, as for the others
    import pyarrow.csv as pcsv

    t, cpu = time.perf_counter(), time.process_time()
    if what == "pandas":
        rows, m = len(pandas.read_csv(src)), None
    elif what == "pyarrow":
        rows, m = pcsv.read_csv(src).num_rows, None
    elif what in ("rechub", "esmm", "esmm_python"):
        engine = "python" if what == "esmm_python" else "arrow"
        m = convert_processed(src, out, valid_fraction=0.1, progress=True, engine=engine)
        rows = sum(v["rows"] for v in m["splits"].values())
    else:
        engine = "python" if what == "raw_python" else "arrow"
        m = prepare_aliccp_raw(src, out, chunk_rows=chunk_rows, progress=True, engine=engine)
        rows = None
    res = {"s": time.perf_counter() - t, "cpu_s": time.process_time() - cpu, "rows": rows}
    return res | {"peak_mb": round(_peak_mb()), "manifest": m}


def _child(*args) -> dict | None:
    """_timed in a fresh spawned process (its own peak RSS); None if it fails (no pandas)."""
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        try:
            return pool.apply(_timed, args)
        except ImportError:
            return None


def bench_rechub(mb: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="rechub_bench_") as d:
        src, out = Path(d) / "rechub", Path(d) / "store"
        src.mkdir()
        t = time.perf_counter()
        generate_rechub(src, mb)
        gen_s = time.perf_counter() - t
        total = sum(p.stat().st_size for p in src.iterdir()) / 1e6
        train = src / "ali_ccp_train.csv"
        train_mb = train.stat().st_size / 1e6
        ours = _child("rechub", str(src), str(out), 0)
        refs = {k: _child(k, str(train), "", 0) for k in ("pandas", "pyarrow")}
    res = {
        "dir_mb": round(total, 1),
        "train_mb": round(train_mb, 1),
        "generate_s": round(gen_s, 1),
        "rows": ours["rows"],
        "prepare_s": round(ours["s"], 2),
        "cpu_s": round(ours["cpu_s"], 2),
        "mb_per_s": round(total / ours["s"], 1),
        "rows_per_s": round(ours["rows"] / ours["s"]),
        "peak_mb": ours["peak_mb"],
    }
    print(
        f"torch-rechub CSV {total:.1f} MB ({ours['rows']:,} rows), prepare {ours['s']:.2f} s: "
        f"{res['mb_per_s']} MB/s, {res['rows_per_s']:,} rows/s, CPU {ours['cpu_s']:.1f} s, "
        f"peak RSS {ours['peak_mb']} MB"
    )
    for k, r in refs.items():
        if r is None:
            print(f"reference {k}: not installed")
            continue
        rate = train_mb / r["s"]
        res[f"{k}_mb_per_s"] = round(rate, 1)
        print(
            f"reference {k}.read_csv, train file {train_mb:.1f} MB ({r['rows']:,} rows), parse "
            f"only: {r['s']:.2f} s, {rate:.1f} MB/s, peak RSS {r['peak_mb']} MB; prepare / "
            f"{k} = {res['mb_per_s'] / rate:.2f}"
        )
    return res


def bench_raw(mb: float, chunk_rows: int, engine: str = "arrow") -> dict:
    with tempfile.TemporaryDirectory(prefix="aliccp_bench_") as d:
        raw, out = Path(d) / "raw", Path(d) / "store"
        raw.mkdir()
        t = time.perf_counter()
        rows = generate(raw, mb)
        gen_s = time.perf_counter() - t
        sizes = {p.name: p.stat().st_size for p in sorted(raw.iterdir())}
        r = _child("raw_python" if engine == "python" else "raw", str(raw), str(out), chunk_rows)
        m, total_s, cpu_s = r["manifest"], r["s"], r["cpu_s"]
        parts = {
            d.name: sum(p.stat().st_size for p in d.rglob("*") if p.is_file()) / 1e6
            for d in sorted(out.iterdir())
            if d.is_dir()
        }
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
        "peak_mb": r["peak_mb"],
    }
    ph = m["timing_s"]
    print(
        f"raw {raw_mb:.1f} MB ({skel} skeleton rows), prepare {total_s:.1f} s: "
        f"{res['mb_per_s']} MB/s, {res['skeleton_rows_per_s']:,} skeleton rows/s, "
        f"peak RSS {r['peak_mb']} MB"
    )
    print(f"CPU time {cpu_s:.1f} s: {res['skeleton_rows_per_cpu_s']:,} skeleton rows per CPU-s")
    print("phases (wall s): " + ", ".join(f"{k} {v:.1f}" for k, v in ph.items()))
    print(
        f"store {store_mb:.0f} MB ({res['store_over_raw']:.2f}x raw): "
        + ", ".join(f"{k} {v:.0f}" for k, v in parts.items())
        + f" MB; splits {res['splits']}"
    )
    return res


def generate_esmm(root: Path, mb: float, seed: int = 0) -> dict:
    """A paddle_esmm train / test directory of about mb MB (see the module docstring)."""
    rng = np.random.default_rng(seed)
    fields = [f for f in [*USER, *ITEM] if not f.endswith("_14") and f not in ("210", "853")]
    fields += ["853"]  # single-valued in the ESMM files; 210 and 150_14 are the bags
    pools = {
        f: [f"{f}:{i}" for i in np.unique(rng.integers(0, 500_000, 5000))]
        for f in [*fields, "210", "150_14"]
    }
    rows = {}
    for split, share in (("train", 0.7), ("test", 0.3)):
        n, written = 0, 0
        with (root / f"{split}.txt").open("w") as fh:
            while written < mb * share * 1e6:
                lines = []
                for _ in range(1000):
                    toks = [pools[f][min(int(rng.zipf(1.3)), len(pools[f])) - 1] for f in fields]
                    for b, k in (("210", rng.integers(1, 6)), ("150_14", rng.integers(10, 121))):
                        toks += [pools[b][min(int(z), len(pools[b])) - 1] for z in rng.zipf(1.3, k)]
                    click = int(rng.random() < 0.04)
                    conv = int(click and rng.random() < 0.05)
                    lines.append(f"{n},{click},{conv}," + ",".join(toks) + "\n")
                    n += 1
                text = "".join(lines)
                fh.write(text)
                written += len(text)
        rows[split] = n
    return rows


def bench_esmm(mb: float, reference: bool) -> dict:
    with tempfile.TemporaryDirectory(prefix="esmm_bench_") as d:
        src = Path(d) / "esmm"
        src.mkdir()
        generate_esmm(src, mb)
        total = sum(p.stat().st_size for p in src.iterdir()) / 1e6
        runs = {
            k: _child(k, str(src), str(Path(d) / f"store_{k}"), 0)
            for k in ("esmm", "esmm_python")[: 1 + reference]
        }
    res = {"dir_mb": round(total, 1)}
    for k, r in runs.items():
        rate = round(total / r["s"], 1)
        res[k] = {"s": round(r["s"], 2), "mb_per_s": rate, "peak_mb": r["peak_mb"]}
        engine = "python" if k == "esmm_python" else "arrow"
        cpu, peak = r["cpu_s"], r["peak_mb"]
        print(
            f"paddle_esmm {total:.1f} MB ({r['rows']:,} rows), engine {engine}: prepare "
            f"{r['s']:.2f} s, {rate} MB/s, CPU {cpu:.1f} s, peak RSS {peak} MB"
        )
    return res


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=200.0, help="raw Ali-CCP size to generate (MB)")
    ap.add_argument("--rechub-mb", type=float, default=200.0, help="torch-rechub CSV size (MB)")
    ap.add_argument("--esmm-mb", type=float, default=100.0, help="paddle_esmm size (MB)")
    ap.add_argument("--only", choices=("raw", "rechub", "esmm"), help="run one of the three")
    ap.add_argument("--esmm-python", action="store_true", help="also time engine='python'")
    ap.add_argument(
        "--raw-engine",
        choices=("arrow", "python"),
        default="arrow",
        help="raw Ali-CCP parser (python: the exact per-line one, as before issue 12)",
    )
    ap.add_argument("--chunk-rows", type=int, default=100_000)
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args(argv)
    res = {}
    if args.only in (None, "rechub"):
        res["rechub"] = bench_rechub(args.rechub_mb)
    if args.only in (None, "raw"):
        res["raw"] = bench_raw(args.mb, args.chunk_rows, args.raw_engine)
    if args.only in (None, "esmm"):
        res["esmm"] = bench_esmm(args.esmm_mb, args.esmm_python)
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")
    return res


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
