"""A quick look at a simulated world before its ground truth: does the click tower learn the
world's click stage, and do edges help at all? On a tuning seed, validation split only.

Command (the table of experiments/README.md, "Planted worlds: the instrument"):
  python experiments/world_probe.py "data.world=cascade,data.zipf_exponent=0.8" \
      "data.world=deep,data.zipf_exponent=0.8" ...

Each argument is one world: comma-separated `--set` overrides of experiments/configs/study_base.py
(plus data.seed=0, a tuning seed, unless given). ESMM ("none") and every edge on ("all") train
as lanes of one architecture batch, as the ground truth trains them, with the retrain budget;
printed: the validation ctr sAUC of each and the validation cvr* sAUC (post-click CVR over
every impression against the true one) of each, and all - none. About 60 s a world on 2 CPU
cores.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np

from autoheri_jax import experiment
from autoheri_jax.config import load_config, split_overrides
from autoheri_jax.metrics import soft_auc
from autoheri_jax.train.arch_batch import architecture_logits, train_architectures

BASE = Path(__file__).resolve().parent / "configs" / "study_base.py"


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-np.asarray(z, np.float64)))


def probe(overrides: list[str]) -> dict:
    cfg = load_config(BASE, ["data.num_test=1000", "data.seed=0", *overrides])
    data = experiment.load_data(cfg, None, progress=False)
    spec = experiment.spec_for(dataclasses.replace(cfg.model, searched=False), data.train)
    masks = np.stack([np.zeros(spec.num_edges), np.ones(spec.num_edges)]).astype(np.float32)
    state, _ = train_architectures(spec, cfg.retrain, data.train, masks, desc="probe")
    logits = architecture_logits(spec, state.params, masks, data.valid, cfg.eval_batch_size)
    truth = data.valid.true_probs
    return {
        "ctr": [soft_auc(_sigmoid(z[:, 0]), truth[:, 0]) for z in logits],
        # the last stage's conditional rate over every impression (post-click CVR in 2 stages)
        "cvr_all": [soft_auc(_sigmoid(z[:, -1]), truth[:, -1]) for z in logits],
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("worlds", nargs="+", help="one world: comma-separated key=value overrides")
    args = ap.parse_args(argv)
    print("| world | valid ctr sAUC none / all | valid cvr* sAUC none / all | all - none |")
    print("| --- | --- | --- | --- |")
    for world in args.worlds:
        r = probe(split_overrides(world))
        ctr, cvr = r["ctr"], r["cvr_all"]
        print(f"| {world} | {ctr[0]:.4f} / {ctr[1]:.4f} | {cvr[0]:.4f} / {cvr[1]:.4f} "
              f"| {cvr[1] - cvr[0]:+.4f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
