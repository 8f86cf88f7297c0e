"""What the edge logits' gradient says once the weights have learned: the evidence the search
follows, measured without the search moving it.

Command (the figures in experiments/README.md, "Why the search cannot yet decide"):
  for s in 0 1 2 3 4; do for c in 0.95 0; do
    python experiments/gate_evidence.py --set data.seed=$s --set search.seed=$s \
        --set data.cascade_strength=$c
  done; done

Trains the config's supernet for its search epochs with every edge logit frozen at its start
(gate 0.5), then averages the task-loss gradient of each edge logit over `--batches`
validation batches of the search's batch size and prints, per edge, the mean (x 1e4) and its
z (mean / standard error over batches). Negative = opening the edge lowers the loss.
Expected on experiments/configs/study_base.py, seeds 0-4: in 7 of the 10 worlds the nine z
share one sign; "open" in 2 of 5 transfer (cascade 0.95) and 2 of 5 control (cascade 0)
worlds; |z| up to 8.3. About 15 s per world on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from autoheri_jax import experiment
from autoheri_jax.config import load_config
from autoheri_jax.train.loop import train
from autoheri_jax.train.sparse_embedding import new_scratch
from autoheri_jax.train.step import make_grad_fn

BASE = Path(__file__).resolve().parent / "configs" / "study_base.py"


def gate_evidence(config: Path, overrides: list[str], batches: int) -> dict:
    cfg = load_config(config, overrides)
    # weights only: the edge logits never move, every gate stays at its starting value
    frozen = dataclasses.replace(cfg.search, arch_warmup_steps=2**30, entropy_weight=0.0,
                                 sparsity_weight=0.0)  # fmt: skip
    data = experiment.load_data(cfg, None, progress=False)
    spec = experiment.spec_for(cfg.model, data.train)
    state, _ = train(spec, frozen, data.train, desc="gate evidence", progress=False)
    dense = dataclasses.replace(frozen, sparse_embeddings=False)  # plain gradients suffice here
    grad_fn = jax.jit(make_grad_fn(spec, dense))
    bs, scratch = frozen.batch_size, new_scratch(spec.table_rows)
    rows = min(batches, data.valid.num_rows // bs)
    if rows < 2:
        raise SystemExit(f"need >= 2 validation batches of {bs}; the split has {rows}")
    grads = []
    for b in range(rows):
        batch = data.valid.batch(np.arange(b * bs, (b + 1) * bs))
        _, g, scratch = grad_fn(state.params, batch, jax.random.PRNGKey(0), jnp.int32(0), scratch)
        grads.append(np.asarray(g["arch"]["edge_logits"], np.float64))
    g = np.stack(grads)
    mean, se = g.mean(0), g.std(0, ddof=1) / np.sqrt(len(g))
    return {
        "edges": [e.name for e in spec.edges],
        "mean_x1e4": [round(float(m) * 1e4, 3) for m in mean],
        "z": [round(float(z), 2) for z in mean / se],
        "batches": rows,
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", type=Path, default=BASE, help="a config (default: study_base)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--batches", type=int, default=40, help="validation batches averaged")
    args = ap.parse_args(argv)
    print(json.dumps(gate_evidence(args.config, args.set, args.batches)))


if __name__ == "__main__":
    main()
