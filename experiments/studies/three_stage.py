"""Three-stage funnel: click -> activation -> conversion, edges between adjacent or all towers.

Command:
  autoheri study --config experiments/studies/three_stage.py --workdir runs/studies/three_stage

Arms over experiments/configs/study_base.py with data.num_stages=3 and stage rates 0.2
(activation | click) / 0.15 (conversion | activation), so ~1.2k training conversions as in the
2-stage base: `adjacent` (click->activation and activation->conversion: 18 candidates) and
`all` (also click->conversion: 27 candidates). Every metric key is reported: ctr, atr
(activation | click), ctatr, cvr (conversion | activation), ctcvr. 5 seeds with the data
redrawn per seed, about 25 s per run on 2 CPU cores.
Expected: AutoHERI at or above ESMM on the entire-space keys; `all` no worse than `adjacent`.
Measured: experiments/README.md (Results).
"""

from pathlib import Path

from autoheri_jax.config import GRADIENT_SEARCH, load_config
from autoheri_jax.study import PRECISE_FIELDS as FIELDS
from autoheri_jax.study import Study

BASE = Path(__file__).resolve().parents[1] / "configs" / "study_base.py"
KEYS = ()  # every key: ctr, atr, ctatr, cvr, ctcvr
# activation | click 20%, conversion | activation 15%: ~1.2k training conversions, as in 2 stages
THREE = ["data.num_stages=3", "data.stage_rates=[0.2,0.15]"]


def get_study() -> Study:
    return Study(
        name="three_stage",
        base=load_config(BASE, [*GRADIENT_SEARCH, *THREE]),
        arms={"adjacent": ["model.edge_pairs=adjacent"], "all": ["model.edge_pairs=all"]},
        seeds=5,
        seed_modes=("data",),
        keys=KEYS,
        fields=FIELDS,
        compare_to="esmm",
        arm_pairs=(("all", "adjacent"),),
        description="A 3-stage funnel (click -> activation -> conversion).",
    )
