"""The search methods in the null world, on evaluation seeds: conversion shares nothing with
click (data.world=null of experiments/studies/planted_worlds.py), so no edge should be kept.

Command (after the null world passed its ground truth, seeds 500-509; evaluation seeds
1000-1009, run once after the defaults were frozen):
  autoheri study --config experiments/studies/null_world.py --workdir runs/studies/null_world

Arms: the same world searched by `masked` (the default: evidence, then the validated
selection with its paired margin), `paper` (the paper's one-shot search as written) and
`ablation` (the 20-architecture batch judged by the same margin). Each run retrains the
derived model, ESMM and every edge on (hierarchical_all_on); scored on the 300k-impression test
draw against the true probabilities (cvr* sAUC). Targets (issue 32): AutoHERI >= ESMM - 0.002
and at most 1 kept edge on average.
Expected and measured: experiments/README.md ("Planted worlds: the instrument").
"""

import dataclasses
from pathlib import Path

from autoheri_jax.study import load_study, method_arms

PLANTED = Path(__file__).resolve().parent / "planted_worlds.py"


def get_study():
    study = load_study(PLANTED)
    null = list(study.arms["null"])
    return dataclasses.replace(
        study,
        name="null_world",
        arms=method_arms(null),
        model_pairs=(("autoheri", "hierarchical_all_on"),),
        description="Every search method where no edge can help (the null world), on "
        "evaluation seeds 1000-1009.",
    )
