"""Cascade sweep: does AutoHERI's gain over ESMM follow how much conversion reuses click's signal?

Command:
  autoheri study --config experiments/studies/cascade_sweep.py --workdir runs/studies/cascade_sweep

Arms: data.cascade_strength 0, 0.25, 0.5, 0.9 over experiments/configs/study_base.py; every arm
runs the one-shot search, retrains the derived model and ESMM; 5 seeds with the data redrawn
per seed, about 6 min on 2 CPU cores.
Expected (the paper's claim): AutoHERI minus ESMM grows with the cascade strength and is about
zero at strength 0 (no harm). Measured: experiments/README.md (Results).
"""

from pathlib import Path

from autoheri_jax.config import GRADIENT_SEARCH, load_config
from autoheri_jax.study import PRECISE_FIELDS as FIELDS
from autoheri_jax.study import Study

BASE = Path(__file__).resolve().parents[1] / "configs" / "study_base.py"
KEYS = ("ctr", "cvr", "ctcvr")
STRENGTHS = ("0", "0.25", "0.5", "0.9")


def get_study() -> Study:
    return Study(
        name="cascade_sweep",
        base=load_config(BASE, GRADIENT_SEARCH),
        arms={f"cascade_{s}": [f"data.cascade_strength={s}"] for s in STRENGTHS},
        seeds=5,
        seed_modes=("data",),
        keys=KEYS,
        fields=FIELDS,
        compare_to="esmm",
        description="AutoHERI vs ESMM as the share of conversion propensity built from click's "
        "hidden interaction (data.cascade_strength) goes from 0 to 0.9.",
    )
