"""Three-stage funnel: click -> activation -> conversion, edges between adjacent or all towers.

Command:
  autoheri study --config experiments/studies/three_stage.py --workdir runs/studies/three_stage

Arms over experiments/configs/study_base.py with data.num_stages=3, stage_rates 0.3 / 0.3 and
300k training impressions (at the base's 80k the deeper stages are barely learned: activation
and conversion AUCs of 0.52-0.56 against the oracle's 0.75-0.78, and more epochs do not help):
`adjacent` (edges click->activation and activation->conversion: 18 candidates) and `all` (also
click->conversion: 27 candidates). Every metric key is reported: ctr, atr (activation | click),
ctatr, cvr (conversion | activation), ctcvr. 5 seeds, about 15 s per run on 2 CPU cores.
Expected: the conditional keys of the later stages stay far below the oracle (few positives:
~1.7k training conversions) and have a wide spread over seeds; AutoHERI should match ESMM on
ctcvr and `all` should not hurt relative to `adjacent`.
Measured with `--seeds 2` (150 s): test AUC autoheri (adjacent) / esmm / oracle: ctr 0.6977 /
0.6974 / 0.7951, atr 0.6062 / 0.6127 / 0.7647, cvr 0.5953 / 0.6013 / 0.7759, ctcvr 0.7367 /
0.7383 / 0.9003. Every paired difference (vs ESMM and all - adjacent) has p > 0.19; kept
edges 8.0 ± 4.2 of 18 (adjacent) and 11.5 ± 2.1 of 27 (all).
"""

from pathlib import Path

from autoheri_jax.config import load_config
from autoheri_jax.study import PRECISE_FIELDS as FIELDS
from autoheri_jax.study import Study

BASE = Path(__file__).resolve().parents[1] / "configs" / "study_base.py"
KEYS = ()  # every key: ctr, atr, ctatr, cvr, ctcvr
# activation | click 20%, conversion | activation 15%: ~1.2k training conversions, as in 2 stages
THREE = ["data.num_stages=3", "data.stage_rates=[0.2,0.15]"]


def get_study() -> Study:
    return Study(
        name="three_stage",
        base=load_config(BASE, THREE),
        arms={"adjacent": ["model.edge_pairs=adjacent"], "all": ["model.edge_pairs=all"]},
        seeds=5,
        seed_modes=("data",),
        keys=KEYS,
        fields=FIELDS,
        compare_to="esmm",
        arm_pairs=(("all", "adjacent"),),
        description="A 3-stage funnel (click -> activation -> conversion).",
    )
