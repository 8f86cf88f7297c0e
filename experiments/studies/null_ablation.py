"""The ablation search on the post-click ranking where no edge can help: the null world
(validated at 400k rows, instrument seeds 500-509) and the control world (cascade strength 0),
fresh evaluation seeds 1010-1019, run once.

Command (after the commit that adds this file; the method's settings are those frozen at
a27c1a9 for experiments/studies/depth_eval_ablation.py):
  autoheri study --config experiments/studies/null_ablation.py --workdir runs/studies/null_ablation
  python experiments/kept_depth.py runs/studies/null_ablation

The worlds, each with 2M validation impressions: planted_worlds.py's null arm (conversion
shares nothing with click; Zipf exponent 0.8, a 300k test draw) and the study base's cascade
world with cascade strength 0 (cascade_eval.py's control arm, whose ground truth on seeds 0-9
found every edge hurting), both at the studies' 400k training impressions; the method:
edge_search.method=ablation, select=cvr_auc, drop_one=false (no edge, all, each edge alone,
one vmapped batch; more edges only at one-sided p < 0.05 / 10 on the clicked validation
rows). This is the half of the issue-32 targets that depth_eval_ablation.py cannot test: a
search that takes the best single edge when it clears the margin must still keep none where
every edge hurts.

Read-outs, written before the run (cvr* sAUC on the test draw, paired by seed, mean [95% CI]):
AutoHERI >= ESMM - 0.002 and at most 1 kept edge on average (issue 32's target where the
ground truth says every edge hurts); kept edges per seed; the run's seconds.
Expected (where it goes, not a prediction) and measured: experiments/README.md ("The ablation
search on evaluation seeds 1010-1019").
"""

from pathlib import Path

from autoheri_jax.config import load_config
from autoheri_jax.study import PRECISE_FIELDS, Study

BASE = Path(__file__).resolve().parents[1] / "configs" / "study_base.py"
VALID = ["data.num_valid=2000000"]
NULL = ["data.cascade_strength=0.95", "data.zipf_exponent=0.8", "data.num_test=300000"]
METHOD = ["edge_search.method=ablation", "edge_search.select=cvr_auc", "edge_search.drop_one=false"]


def get_study() -> Study:
    return Study(
        name="null_ablation",
        base=load_config(BASE, ["baselines=esmm,hierarchical_all_on"]),
        arms={
            "null_ablation_cvr": [*NULL, "data.world=null", *VALID, *METHOD],
            "control_ablation_cvr": ["data.cascade_strength=0", *VALID, *METHOD],
        },
        seeds=10,
        first_seed=1010,  # fresh evaluation seeds, run once
        seed_modes=("data",),
        compare_to="esmm",
        keys=("cvr", "ctcvr"),
        fields=PRECISE_FIELDS,
        model_pairs=(("autoheri", "hierarchical_all_on"),),
        description="The ablation search on the post-click ranking where every edge hurts "
        "(null, control at 400k rows); fresh evaluation seeds 1010-1019.",
    )
