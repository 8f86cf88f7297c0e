"""The ablation search, judged on the post-click ranking, on the two worlds whose 4M-row
instrument checks passed (transfer, deep): fresh evaluation seeds 1010-1019, run once.

Command (after the commit that adds this file, which freezes everything it runs with):
  autoheri study --config experiments/studies/depth_eval_ablation.py \
      --workdir runs/studies/depth_eval_ablation
  python experiments/kept_depth.py runs/studies/depth_eval_ablation

The worlds: those of depth_eval.py (transfer: cascade strength 0.95) and depth_eval_deep.py
(deep), 4M training impressions, Zipf exponent 0.8, a 300k test draw; here with 2M validation
impressions. Their ground truth (instrument seeds 500-509) planted a source depth: each edge
from click layer 1 or 2, retrained alone, beat each edge from click layer 0, and the best
single deeper edge beat every edge on (experiments/README.md, "The instrument check at 4M
rows"). Seeds 1000-1009 have judged other methods on these worlds; 1010-1019 have never run.

The method, fixed before these seeds from the statistics and tuning seed 10 (validation only;
experiments/studies/select_tune.py): edge_search.method=ablation with drop_one=false (no edge,
all, each edge alone: 11 lanes of one vmapped batch with the retrain budget) and
select=cvr_auc (the conversion stage's AUC on the clicked validation rows, DeLong's paired
test, a candidate with more edges must win at one-sided p < 0.05 / 10). On tuning seed 10
with 1M validation impressions that test had a standard error of 0.0010 in transfer (it
detects 0.0035 at 80% power) and 0.0020 in deep (0.0068), where the best single edge beat no
edge at p 0.0026 against the margin's 0.005; so this study doubles the validation split to 2M
impressions (standard errors about 1/sqrt(2) of those). ESMM and every-edge-on are the batch's
"none" and "all" lanes; the chosen lane is the derived model (none is retrained).

Read-outs, written before the run (cvr* sAUC on the test draw, paired by seed, mean [95% CI]):
  * right depth (at least one edge kept, none from click layer 0) in >= 80% of seeds (the
    issue-32 target), with its exact binomial interval;
  * AutoHERI >= max(ESMM, all-on) - 0.003; the paper's claim: AutoHERI above ESMM and above
    all-on, each CI above 0;
  * kept edges per seed and the run's seconds.
Expected (where it goes, not a prediction) and measured: experiments/README.md ("The ablation
search on evaluation seeds 1010-1019").
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
    "data.num_valid=2000000",
]
METHOD = ["edge_search.method=ablation", "edge_search.select=cvr_auc", "edge_search.drop_one=false"]


def get_study() -> Study:
    return Study(
        name="depth_eval_ablation",
        base=load_config(BASE, ["baselines=esmm,hierarchical_all_on"]),
        arms={
            "transfer4m_ablation_cvr": [*WORLD, "data.world=cascade", *METHOD],
            "deep4m_ablation_cvr": [*WORLD, "data.world=deep", *METHOD],
        },
        seeds=10,
        first_seed=1010,  # fresh evaluation seeds, run once
        seed_modes=("data",),
        compare_to="esmm",
        keys=("cvr", "ctcvr"),
        fields=PRECISE_FIELDS,
        model_pairs=(("autoheri", "hierarchical_all_on"),),
        description="The ablation search on the post-click ranking (2M validation rows) on the "
        "4M-row transfer and deep worlds; fresh evaluation seeds 1010-1019.",
    )
