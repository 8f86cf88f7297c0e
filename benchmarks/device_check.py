"""The accelerator check: one prepared call that measures what a GPU changes, in under 8 minutes.

Command:
  python benchmarks/device_check.py [--json out.json]     # on the accelerator machine
  python benchmarks/device_check.py --smoke [--json ...]  # seconds on CPU: the tests' check

Printed, each with the backend and device name:
  steps      train-step examples/s of ESMM, the search supernet and the every-edge retrain on
             experiments/configs/default.py's model, batch 2048 to 65536 (batches on the
             device; measure.bench_train, compile excluded, median of 3 repeats)
  seeds      study-size vmapped seeds K = 1..64 (experiments/configs/study_base.py's search
             step): ms per step, examples/s per seed and K seeds' time against one run
  dispatch   train.steps_per_dispatch K = 1, 4, 16 x host batches / device-resident store
             (train.device_resident=on) through loop.train on default.py's retrain model,
             batch 2048: steps/s and examples/s (benchmarks/dispatch_throughput.py)
  arch       the vmapped architecture batch of the ground truth (20 edge masks, 2 + 2E) on
             study_base through loop.train: wall seconds, steps, examples/s over all lanes
  export     `autoheri export` of a smoke run, lowered for CPU and CUDA, scored on this device
             (benchmarks/serving_latency.py): rows/s at batch 4096 and 65536
  study      one 10-seed x 2-arm study (experiments/studies/debias_ablation.py with ESMM as its
             only baseline, --vmap-seeds): wall seconds
--smoke shrinks every part (batch 256, K 1-2, 2 seeds, tiny worlds) so the code paths run on CPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Before jax is imported: the parts that run as child processes (export, study) each need their
# own share of the GPU while this process still holds its arrays, so nobody preallocates 75%.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax

sys.path.insert(0, str(Path(__file__).resolve().parent))
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import dispatch_throughput  # noqa: E402
import measure  # noqa: E402
import seeds_throughput  # noqa: E402

from autoheri_jax.config import GradientSearch, load_config, supernet_config  # noqa: E402
from autoheri_jax.experiment import load_data, spec_for  # noqa: E402
from autoheri_jax.train.arch_batch import ground_truth_masks, train_architectures  # noqa: E402

TINY = ["data.num_users=200", "data.num_items=300", "model.hidden=[8,4]", "model.embed_dim=4"]


def _print(line: str) -> None:
    print(line, flush=True)


def steps(batches: list[int], n: int, repeats: int) -> list[dict]:
    cfg = measure.base_config("experiments/configs/default.py")
    data = measure.train_data(cfg, 4 * max(batches))
    rows = []
    for name in ("esmm", "search", "retrain"):
        model, tcfg = measure.model_for(cfg, name)
        spec = measure.spec_of(model, data, searched=name == "search")
        for b in batches:
            t = dataclasses.replace(tcfg, batch_size=b)
            out = measure.bench_train(spec, t, data, steps=n, repeats=repeats, pipeline=False)
            rate = out["device"]["examples_per_s"]
            rows.append(
                {
                    "model": name,
                    "batch_size": b,
                    "examples_per_s": rate,
                    "step_ms": out["device"]["step_ms"],
                    "compile_s": out["compile_s"],
                }
            )
            _print(
                f"steps  {name:<8} batch {b:>6}: {rate:>12,.0f} examples/s "
                f"({out['device']['step_ms']:.2f} ms/step, compile {out['compile_s']:.1f} s)"
            )
    return rows


def seeds(ks: list[int], n: int, smoke: bool) -> dict:
    cfg = load_config(seeds_throughput.BASE, TINY if smoke else [])
    tcfg = supernet_config(  # the gated supernet (the gradient search's defaults)
        dataclasses.replace(cfg.search, epochs=1, batch_size=64 if smoke else 1024),
        arch=GradientSearch(),
    )
    datas = seeds_throughput._datasets(cfg, max(ks), (n + 2) * tcfg.batch_size)
    spec = spec_for(cfg.model, datas[0], searched=True)
    res = seeds_throughput.bench_model("search", spec, tcfg, datas, ks, n)
    for r in res["vmapped"]:
        _print(
            f"seeds  K {r['k']:>2}: {1e3 * r['s_per_step']:.2f} ms/step, "
            f"{r['examples_per_s_per_seed']:,.0f} examples/s per seed, "
            f"{r['x_one_run']:.2f}x one run"
        )
    return res


def dispatch(smoke: bool) -> dict:
    """Steps per dispatch and the device store (dispatch_throughput prints each row)."""
    args = ["--smoke", "--ks", "1,4", "--steps", "4"] if smoke else ["--steps", "192"]
    return dispatch_throughput.main(args)


def arch(smoke: bool) -> dict:
    cfg = load_config(seeds_throughput.BASE, TINY if smoke else [])
    if smoke:
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, num_train=2048))
    data = load_data(cfg, None, progress=False)
    spec = spec_for(cfg.model, data.train)  # every candidate, mask-gated
    names, masks = ground_truth_masks(spec.edges)
    tcfg = dataclasses.replace(cfg.retrain, epochs=1, **({"batch_size": 256} if smoke else {}))
    t0 = time.perf_counter()
    _, stats = train_architectures(spec, tcfg, data.train, masks, desc="arch")
    out = {
        "architectures": len(names),
        "steps": stats["steps"],
        "seconds": time.perf_counter() - t0,
        "examples_per_s": stats["examples_per_s"],
    }
    _print(
        f"arch   {out['architectures']} masks x {out['steps']} steps: {out['seconds']:.1f} s "
        f"(compile included), {out['examples_per_s']:,.0f} examples/s over all lanes"
    )
    return out


def _child(cmd: list[str], what: str) -> float:
    """Runs `cmd` in the repo; -> its wall seconds. A failure stops the check, naming `what`."""
    t0 = time.perf_counter()
    # Prepended, not replaced: on the accelerator machine carried wheels sit on PYTHONPATH too.
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH", "")]))
    env = {**os.environ, "PYTHONPATH": path}
    p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900, env=env)
    if p.returncode:
        sys.exit(f"device_check: {what} failed:\n{p.stdout[-2000:]}{p.stderr[-3000:]}")
    return time.perf_counter() - t0


def _cli(*args: str) -> float:
    return _child([sys.executable, "-m", "autoheri_jax", *args], f"autoheri {args[0]}")


def export(tmp: Path, smoke: bool) -> dict:
    wd = tmp / "smoke_run"
    _cli("run", "--config", "experiments/configs/smoke.py", "--workdir", str(wd), "--no-progress")
    batches = "256" if smoke else "4096,65536"
    out_json = tmp / "serving.json"
    cmd = [
        sys.executable,
        str(REPO / "benchmarks" / "serving_latency.py"),
        "--workdir",
        str(wd),
        "--batches",
        batches,
        "--repeats",
        "3" if smoke else "20",
        "--imports",
        "1",
        "--json",
        str(out_json),
    ]
    _child(cmd, "serving_latency")
    res = json.loads(out_json.read_text())
    for b, r in res["batches"].items():
        _print(
            f"export platforms {res['platform']}: batch {b}: {r['rows_per_s']:,.0f} rows/s "
            f"(median {r['median_ms']:.2f} ms)"
        )
    return res


def study(tmp: Path, smoke: bool) -> dict:
    seeds_n = 2 if smoke else 10
    sets = ["baselines=esmm"] + (
        [
            *TINY,
            "data.num_train=2048",
            "data.num_valid=512",
            "data.num_test=1024",
            "search.batch_size=256",
            "retrain.batch_size=256",
            "edge_search.arch_warmup_steps=2",
            "edge_search.entropy_warmup_steps=3",
        ]
        if smoke
        else []
    )
    args = [
        "study",
        "--config",
        "experiments/studies/debias_ablation.py",
        "--workdir",
        str(tmp / "study"),
        "--seeds",
        str(seeds_n),
        "--vmap-seeds",
        "--no-progress",
    ]
    seconds = _cli(*args, *[x for s in sets for x in ("--set", s)])
    _print(f"study  {seeds_n} seeds x 2 arms (esmm + the search, vmapped seeds): {seconds:.1f} s")
    # where a run's time goes (autoheri_jax/phases.py): what to move to the device next
    summary = json.loads((tmp / "study" / "study.json").read_text())
    by_arm = {
        arm: a["cost"]["phases"]
        for body in summary["modes"].values()
        for arm, a in body["arms"].items()
        if a["cost"].get("phases")
    }
    for arm, t in by_arm.items():
        _print(
            f"study  {arm}: mean seconds per run: "
            + ", ".join(f"{k} {v:.1f}" for k, v in t.items())
        )
    return {"seeds": seeds_n, "arms": 2, "seconds": seconds, "phases": by_arm}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny sizes: the code paths on CPU")
    ap.add_argument("--only", default="steps,dispatch,seeds,arch,export,study")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    only = set(args.only.split(","))
    dev = jax.devices()[0]
    out = {
        "backend": jax.default_backend(),
        "device": dev.device_kind,
        "devices": len(jax.devices()),
    }
    _print(f"device_check on {out['backend']}: {out['device']} x {out['devices']}")
    t0 = time.perf_counter()
    out["seconds"] = 0.0

    def record(part: str, value) -> None:
        # Written after every part: a call cut off at its time limit keeps what it measured.
        out[part] = value
        out["seconds"] = time.perf_counter() - t0
        if args.json:
            args.json.write_text(json.dumps(out, indent=1, default=str))

    with tempfile.TemporaryDirectory() as tmp:
        if "steps" in only:
            batches = [256] if args.smoke else [2048, 8192, 32768, 65536]
            record("steps", steps(batches, 2 if args.smoke else 20, 1 if args.smoke else 3))
        if "dispatch" in only:
            record("dispatch", dispatch(args.smoke))
        if "seeds" in only:
            ks = [1, 2] if args.smoke else [1, 2, 4, 8, 16, 32, 64]
            record("seeds", seeds(ks, 2 if args.smoke else 30, args.smoke))
        if "arch" in only:
            record("arch", arch(args.smoke))
        if "export" in only:
            record("export", export(Path(tmp), args.smoke))
        if "study" in only:
            record("study", study(Path(tmp), args.smoke))
    _print(f"device_check: {out['seconds']:.0f} s in all")
    return out


if __name__ == "__main__":
    main()
