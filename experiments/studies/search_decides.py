"""Does the search decide on evidence? The same search in a world where edges help by
construction and in one where they cannot.

Command:
  autoheri study --config experiments/studies/search_decides.py \
      --workdir runs/studies/search_decides

Arms over experiments/configs/study_base.py (its docstring explains the world):
  transfer     cascade strength 0.95: conversion reuses click's hidden interaction, which the
               click tower learns from ~40k clicks and the conversion tower cannot from ~1.2k
               conversions
  no_cascade   cascade strength 0: the stages share nothing, so an edge carries no signal
Every run searches, then retrains the derived model, ESMM, every edge on
(hierarchical_all_on) and a random mask with as many edges as the search kept
(random_matched). 10 seeds; each seed redraws the simulated world and its data (data.seed) and
the model seeds. Scored on a separate 1M-impression test draw against the true probabilities;
the headline is cvr.soft_auc_all (post-click CVR over every impression). About 7 min on 2 CPU
cores.
Expected (the targets of issue 10): in transfer, all-on and AutoHERI above ESMM with the
paired 95% CI above 0 and AutoHERI >= random_matched; in no_cascade, AutoHERI no worse than
ESMM (CI reaching 0 or above, point estimate >= -0.002) with clearly fewer kept edges;
kept-set Jaccard over the transfer seeds >= 0.7. Measured: see experiments/README.md.
"""

from pathlib import Path

from autoheri_jax.config import load_config
from autoheri_jax.study import PRECISE_FIELDS, Study

BASE = Path(__file__).resolve().parents[1] / "configs" / "study_base.py"


def get_study() -> Study:
    return Study(
        name="search_decides",
        base=load_config(BASE, ["baselines=esmm,hierarchical_all_on,random_matched"]),
        arms={
            "transfer": ["data.cascade_strength=0.95"],
            "no_cascade": ["data.cascade_strength=0"],
        },
        seeds=10,
        seed_modes=("data",),
        compare_to="esmm",
        keys=("cvr", "ctcvr"),
        fields=PRECISE_FIELDS,
        model_pairs=(("autoheri", "random_matched"), ("autoheri", "hierarchical_all_on")),
        description="The one-shot search where edges help by construction (transfer) and where "
        "they carry nothing (no_cascade).",
    )
