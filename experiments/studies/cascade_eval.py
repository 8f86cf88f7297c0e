"""Today's cascade worlds on evaluation seeds: the transfer world (cascade 0.95: conversion
reuses click's interaction) and the control (cascade 0: nothing shared), searched by the
default (masked + the selection's paired margin) and by the paper's search as written.

Command (evaluation seeds 1000-1009, run once after the defaults were frozen in 9dc867a):
  autoheri study --config experiments/studies/cascade_eval.py --workdir runs/studies/cascade_eval

The worlds and models of search_decides.py (study_base; derived model, ESMM, every edge on and
a random mask of the kept size retrained; 1M-impression test draw, cvr* sAUC). These worlds
have no planted edge: every click layer carries the shared scalar, so they test whether a
search shares representations when that helps and not when it hurts, not which edge it picks.
Targets (issue 32): AutoHERI >= max(ESMM, all-on) - 0.003; in control AutoHERI >= ESMM - 0.002
with at most 1 kept edge on average.
Expected and measured: experiments/README.md ("Evaluation seeds").
"""

import dataclasses
from pathlib import Path

from autoheri_jax.study import load_study

SEARCH_DECIDES = Path(__file__).resolve().parent / "search_decides.py"


def get_study():
    study = load_study(SEARCH_DECIDES)
    arms = {}
    for world, cascade in (("transfer", 0.95), ("control", 0.0)):
        for method in ("masked", "paper"):
            arms[f"{world}_{method}"] = [
                f"data.cascade_strength={cascade}",
                f"edge_search.method={method}",
            ]
    return dataclasses.replace(
        study,
        name="cascade_eval",
        arms=arms,
        first_seed=1000,
        description="The cascade worlds (transfer, control) on evaluation seeds 1000-1009, "
        "the default search against the paper's.",
    )
