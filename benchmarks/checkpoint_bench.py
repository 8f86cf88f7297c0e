"""Checkpoint size and save / restore time for the default model, and step time on 1 vs 8
simulated CPU devices (overhead, not speed-up: 8 simulated devices share the same cores).

Command:
  python benchmarks/checkpoint_bench.py [--json out.json]

The device comparison runs each launcher in a subprocess with
XLA_FLAGS=--xla_force_host_platform_device_count=8 (a process's device count is fixed when JAX
starts); the search step of experiments/configs/default.py at batch 2048 is timed after warm-up.
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

REPO = Path(__file__).resolve().parents[1]


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def checkpoint_figures() -> dict:
    import jax

    from autoheri_jax.config import GradientSearch, load_config, supernet_config
    from autoheri_jax.experiment import load_data, spec_for
    from autoheri_jax.train.checkpoint import Checkpointer
    from autoheri_jax.train.optim import make_optimizer
    from autoheri_jax.train.step import init_state

    cfg = load_config(REPO / "experiments/configs/default.py")
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, num_train=4096, num_test=1))
    spec = spec_for(cfg.model, load_data(cfg).train, searched=True)
    tcfg = supernet_config(cfg.search, arch=GradientSearch())  # the gated supernet
    state = jax.jit(lambda: init_state(spec, tcfg, make_optimizer(tcfg)))()
    abstract = jax.eval_shape(lambda: state)
    out = {
        "params": int(sum(x.size for x in jax.tree.leaves(state.params))),
        "state_values": int(sum(x.size for x in jax.tree.leaves(state))),
    }
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("async", "sync"):
            d = Path(tmp) / mode
            with Checkpointer(d, async_save=mode == "async", keep_best=False) as ck:
                t0 = time.perf_counter()
                ck.save(1, state, extra={"phase": "bench"}, force=True)
                returned = time.perf_counter() - t0
                ck.wait()
                out[f"{mode}_save_returns_s"] = returned
                out[f"{mode}_save_committed_s"] = time.perf_counter() - t0
            out["checkpoint_mb"] = _dir_bytes(d) / 2**20
        with Checkpointer(Path(tmp) / "sync", keep_best=False) as ck:
            t0 = time.perf_counter()
            ck.restore(None, abstract)
            out["restore_s"] = time.perf_counter() - t0
    return out


def step_time(launcher: str, steps: int = 20) -> dict:
    import jax
    import numpy as np

    from autoheri_jax.config import GradientSearch, ParallelConfig, load_config, supernet_config
    from autoheri_jax.experiment import load_data, spec_for
    from autoheri_jax.train.parallel import make_data_parallel

    cfg = load_config(REPO / "experiments/configs/default.py")
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, num_train=65536, num_test=1))
    data = load_data(cfg).train
    spec = spec_for(cfg.model, data, searched=True)
    tcfg = supernet_config(  # the gated supernet
        dataclasses.replace(cfg.search, batch_size=2048), arch=GradientSearch()
    )
    dp = make_data_parallel(spec, tcfg, ParallelConfig(launcher=launcher))
    state = dp.init_state(spec, tcfg)
    rng = np.random.default_rng(0)
    batches = [dp.place_batch(data.batch(rng.integers(0, data.num_rows, 2048))) for _ in range(4)]
    for i in range(3):
        state, _ = dp.step(state, batches[i % 4])
    jax.block_until_ready(state)
    t0 = time.perf_counter()
    for i in range(steps):
        state, _ = dp.step(state, batches[i % 4])
        if i % 4 == 3:
            jax.block_until_ready(state.step)
    jax.block_until_ready(state)
    ms = 1e3 * (time.perf_counter() - t0) / steps
    return {
        "launcher": launcher,
        "devices": dp.num_devices,
        "ms_per_step": ms,
        "examples_per_s": 2048 / ms * 1e3,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: one launcher in this process
    args = ap.parse_args()
    if args.one:
        print(json.dumps(step_time(args.one)))
        return
    results = {"checkpoint": checkpoint_figures(), "devices": []}
    c = results["checkpoint"]
    print(
        f"default model: {c['params']:,} params, {c['state_values']:,} state values "
        f"(params + optimiser moments); checkpoint {c['checkpoint_mb']:.1f} MB on disk"
    )
    print(
        f"save: async returns in {c['async_save_returns_s']:.3f} s, committed in "
        f"{c['async_save_committed_s']:.3f} s; sync {c['sync_save_committed_s']:.3f} s; "
        f"restore {c['restore_s']:.3f} s"
    )
    for launcher, devices in (("single", 1), ("mesh", 8), ("pmap", 8)):
        env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
        if devices > 1:
            env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
        out = subprocess.run(
            [sys.executable, __file__, "--one", launcher],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        r = json.loads(out.stdout.strip().splitlines()[-1])
        results["devices"].append(r)
        print(
            f"search step, batch 2048, {r['launcher']:<6} on {r['devices']} device(s): "
            f"{r['ms_per_step']:.1f} ms/step ({r['examples_per_s']:,.0f} examples/s)"
        )
    print(f"load average: {os.getloadavg()[0]:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
