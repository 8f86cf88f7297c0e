"""The vmapped lane steps (architecture batch, K seeds) with the finite-loss guard on the update
against the same step without any guard: what the guard costs.

Command:
  python benchmarks/lane_step.py [--lanes 3,20] [--seeds 4] [--steps 20]

Model: experiments/configs/study_base.py's (embed 8, towers 64-32-16, 9 edges, batch 1024) on
20k simulated rows. Printed: ms per step, steady state (3 warm-up steps, then --steps timed).
Measured on 2 CPU cores, 2026-12-07, by the scratch script this file was made from (one run
each, another session's tests sharing the machine): 3 lanes 18.8 ms guarded / 19.0 ms
unguarded (31.2 ms with the earlier guard, a `cond` selecting between the whole old and new
stacked states), 20 lanes 162.9 / 177.1 (204.5), 4 seeds 20.0 / 22.8 (54.0 with the earlier
per-lane guard, a select under vmap).
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np

from autoheri_jax import experiment
from autoheri_jax.config import load_config
from autoheri_jax.train.arch_batch import ground_truth_masks
from autoheri_jax.train.lanes import arch_lanes, seed_lanes
from autoheri_jax.train.step import make_step_parts


def unguarded(spec, cfg, opt, batch_axis, gates_axis):
    """The lane step without a guard: every update applied, finite or not."""
    parts = make_step_parts(spec, cfg, opt)

    def step(state, batch, gates=None):
        def one(s, b, g):
            aux, grads, scratch = parts.gradients(s, b, g)
            params, opt_state = parts.apply(s.params, s.opt_state, grads)
            return parts.finish(s, params, opt_state, scratch, aux)

        return jax.vmap(one, in_axes=(0, batch_axis, gates_axis))(state, batch, gates)

    return step


def timed(step, state, batch, steps: int) -> float:
    for _ in range(3):
        state, _ = step(state, batch)
    jax.block_until_ready(state)
    t0 = time.perf_counter()
    for _ in range(steps):
        state, _ = step(state, batch)
    jax.block_until_ready(state)
    return (time.perf_counter() - t0) / steps * 1e3


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lanes", default="3,20")
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args(argv)
    cfg = load_config(
        "experiments/configs/study_base.py",
        ["data.num_train=20000", "data.num_valid=2000", "data.num_test=2000"],
    )
    data = experiment.load_data(cfg, None, progress=False)
    spec = experiment.spec_for(cfg.model, data.train)
    masks = ground_truth_masks(spec.edges)[1]
    batch = data.train.batch(np.arange(cfg.retrain.batch_size))
    for count in (int(a) for a in args.lanes.split(",")):
        lanes = arch_lanes(spec, cfg.retrain, masks[:count])
        gates = jnp.asarray(masks[:count])
        bare = unguarded(spec, cfg.retrain, lanes.optimizer, None, 0)
        bare = jax.jit(lambda s, b, bare=bare, gates=gates: bare(s, b, gates), donate_argnums=0)
        ms = [
            timed(f, lanes.init_state(spec, cfg.retrain), batch, args.steps)
            for f in (lanes.step, bare)
        ]
        print(f"{count} architectures: guarded {ms[0]:.1f} ms, unguarded {ms[1]:.1f} ms a step")
    cfgs = [dataclasses.replace(cfg.retrain, seed=s) for s in range(args.seeds)]
    lanes = seed_lanes(spec, cfgs, [data.train] * args.seeds)
    stacked = {k: np.stack([v] * args.seeds) for k, v in batch.items()}
    bare = jax.jit(unguarded(spec, cfgs[0], lanes.optimizer, 0, None), donate_argnums=0)
    ms = [
        timed(f, lanes.init_state(spec, cfgs[0]), stacked, args.steps) for f in (lanes.step, bare)
    ]
    print(f"{args.seeds} seeds: guarded {ms[0]:.1f} ms, unguarded {ms[1]:.1f} ms a step")


if __name__ == "__main__":
    main()
