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
Every run searches with the config's default, the masked search (autoheri_jax/search/evidence.py:
supernet trained under Bernoulli(0.5) edge masks, each edge's recalibrated on/off contrast on
validation judged at z > 3; then search/selection.py: no edge, the evidence's edges and every
edge retrained and the best on validation ctcvr AUC derived), then retrains the derived model,
ESMM, every edge on
(hierarchical_all_on) and a random mask with as many edges as the search kept
(random_matched). 10 seeds; each seed redraws the simulated world and its data (data.seed) and
the model seeds. Scored on a separate 1M-impression test draw against the true probabilities;
the headline is cvr.soft_auc_all (post-click CVR over every impression). About 25 min on 2 CPU
cores (about 70 s per run with the selection). The ground truth of the same worlds (20
retrained architectures each): experiments/ground_truth.py; the gradient search on them:
paper_recipe.py and, with `--set edge_search.method=gradient`, the previous default.
Targets (issue 19): in both regimes AutoHERI >= max(ESMM, all-on) - 0.003 cvr* sAUC; in
transfer above both (paired CI above 0); >= 2 more kept edges in transfer than in no_cascade.
Expected and measured: see experiments/README.md ("The masked search").
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
