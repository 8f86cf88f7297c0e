"""Tuning seeds for the selection's criterion and validation size on the two worlds whose
4M-row instrument checks passed (transfer, deep): does a post-click criterion (cvr_auc) on a
1M-impression validation split see what ctcvr_auc on 100k could not?

Command (tuning seed 10; nothing here is reported as a result):
  autoheri study --config experiments/studies/select_tune.py --workdir runs/tune/select_tune

Why these settings are the candidates (from statistics and the ground truth, before any
search ran with them): on evaluation seeds 1000-1009 the default's selection compared
candidates on validation ctcvr AUC, where a +0.009 cvr* sAUC gain moves the score by ~0.0014
against a detectable difference of 0.004-0.007 ("Evaluation seeds at 4M rows",
experiments/README.md). The edges feed only the conversion tower, so the post-click ranking
(cvr_auc: the conversion stage on clicked rows) is where they show; and ten times the
validation rows cut the paired test's standard error by about sqrt(10).

Arms: the masked search with select=cvr_auc, and the ablation search (no edge, all, each edge
alone: drop_one=false, 11 lanes) with select=cvr_auc, each with 1M validation impressions, in
both worlds. What is read (validation only): each comparison's difference, standard error and
detectable difference; which candidate wins; how long a run takes. Test metrics choose nothing.
Expected and measured: experiments/README.md ("The ablation search on the post-click
ranking").
"""

from pathlib import Path

from autoheri_jax.config import load_config
from autoheri_jax.study import PRECISE_FIELDS, Study

BASE = Path(__file__).resolve().parents[1] / "configs" / "study_base.py"
WORLD = [
    "data.cascade_strength=0.95",
    "data.zipf_exponent=0.8",
    "data.num_test=300000",
    "data.num_train=4000000",
    "data.num_valid=1000000",
]
METHODS = {
    "masked_cvr": ["edge_search.method=masked", "edge_search.select=cvr_auc"],
    "ablation_cvr": [
        "edge_search.method=ablation",
        "edge_search.select=cvr_auc",
        "edge_search.drop_one=false",
    ],
}
WORLDS = {"transfer4m": ["data.world=cascade"], "deep4m": ["data.world=deep"]}


def get_study() -> Study:
    return Study(
        name="select_tune",
        base=load_config(BASE, ["baselines=esmm,hierarchical_all_on"]),
        arms={
            f"{w}_{m}": [*WORLD, *world, *method]
            for w, world in WORLDS.items()
            for m, method in METHODS.items()
        },
        seeds=1,
        first_seed=10,  # tuning seeds
        seed_modes=("data",),
        compare_to="esmm",
        keys=("cvr", "ctcvr"),
        fields=PRECISE_FIELDS,
        model_pairs=(("autoheri", "hierarchical_all_on"),),
        description="Tuning seeds: the selection's criterion (cvr_auc) and validation size "
        "(1M) for the masked and ablation searches on the 4M-row transfer and deep worlds.",
    )
