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

With --groups pairs, each task pair's edges also train as a group of their own (a 3-stage
world's click -> activation, click -> conversion and activation -> conversion edges), so a
world whose answer is a tower pair shows whether that pair's edges help and the others' do not;
with --groups sources, the edges from each source layer (into every destination layer) do, so
a world whose answer is a source depth shows which depth helps.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from autoheri_jax import experiment
from autoheri_jax.config import load_config, split_overrides
from autoheri_jax.metrics import soft_auc
from autoheri_jax.train.arch_batch import architecture_logits, train_architectures

BASE = Path(__file__).resolve().parent / "configs" / "study_base.py"


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-np.asarray(z, np.float64)))


def group_masks(spec, groups: str) -> dict[str, np.ndarray]:
    """Architecture name -> [E] mask: none, all, then each group's edges alone (groups "pairs":
    by task pair; "sources": by source task and layer; "": no groups)."""
    out = {"none": np.zeros(spec.num_edges), "all": np.ones(spec.num_edges)}
    if not groups:
        return out
    key = {
        "pairs": lambda e: (f"{e.src_task}->{e.dst_task}", (e.src_task, e.dst_task)),
        "sources": lambda e: (f"from {e.src_task}.{e.src_layer}", (e.src_task, e.src_layer)),
    }[groups]
    for name, _ in sorted({key(e) for e in spec.edges}, key=lambda x: x[1]):
        out[name] = np.asarray([key(e)[0] == name for e in spec.edges], np.float64)
    return out


def probe(overrides: list[str], groups: str = "") -> dict:
    cfg = load_config(BASE, ["data.num_test=1000", "data.seed=0", *overrides])
    data = experiment.load_data(cfg, None, progress=False)
    spec = experiment.spec_for(cfg.model, data.train)
    named = group_masks(spec, groups)
    masks = np.stack(list(named.values())).astype(np.float32)
    state, _ = train_architectures(spec, cfg.retrain, data.train, masks, desc="probe")
    logits = architecture_logits(spec, state.params, masks, data.valid, cfg.eval_batch_size)
    truth = data.valid.true_probs
    return {
        "names": list(named),
        "ctr": [soft_auc(_sigmoid(z[:, 0]), truth[:, 0]) for z in logits],
        # the last stage's conditional rate over every impression (post-click CVR in 2 stages)
        "cvr_all": [soft_auc(_sigmoid(z[:, -1]), truth[:, -1]) for z in logits],
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("worlds", nargs="+", help="one world: comma-separated key=value overrides")
    ap.add_argument(
        "--groups",
        choices=("pairs", "sources"),
        default="",
        help="also each task pair's (or each source layer's) edges alone",
    )
    args = ap.parse_args(argv)
    if args.groups:
        print("| world | architecture | valid cvr* sAUC | minus none |")
        print("| --- | --- | --- | --- |")
    else:
        print("| world | valid ctr sAUC none / all | valid cvr* sAUC none / all | all - none |")
        print("| --- | --- | --- | --- |")
    for world in args.worlds:
        r = probe(split_overrides(world), args.groups)
        ctr, cvr = r["ctr"], r["cvr_all"]
        if args.groups:
            for name, v in zip(r["names"], cvr, strict=True):
                print(f"| {world} | {name} | {v:.4f} | {v - cvr[0]:+.4f} |", flush=True)
            continue
        print(
            f"| {world} | {ctr[0]:.4f} / {ctr[1]:.4f} | {cvr[0]:.4f} / {cvr[1]:.4f} "
            f"| {cvr[1] - cvr[0]:+.4f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
