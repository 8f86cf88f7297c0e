"""Cascade sweep: does AutoHERI's gain over ESMM follow how much conversion reuses click's signal?

Command:
  autoheri study --config experiments/studies/cascade_sweep.py --workdir runs/studies/cascade_sweep
  (add `--seeds 2` for a quick look, `--vary-data` to also redraw the simulated data per seed)

Arms: data.cascade_strength 0, 0.25, 0.5, 0.9 over experiments/configs/study_base.py (80k
training impressions, towers 32-16-8, 9 hierarchical candidate edges); every arm runs the
one-shot search, retrains the derived model and ESMM, 5 seeds (search and retrain seeds vary,
the data of an arm is fixed). About 10 s per run on 2 unloaded CPU cores: ~4 min in all.
Expected (the paper's claim, tested here): AutoHERI minus ESMM on CVR / CTCVR AUC grows with
the cascade strength, and at strength 0 (nothing to share) it is about zero: AutoHERI should do
no harm there (a paired difference whose p-value is not small).
Measured with `--seeds 2` (45-52 s on 2 CPU cores, warm compilation cache): the claim does NOT
show at this size. AutoHERI minus ESMM, test CVR AUC: -0.0057 (p=0.02), -0.0058 (p=0.24),
-0.0042 (p=0.23), -0.0049 (p=0.11) at strength 0 / 0.25 / 0.5 / 0.9; CTCVR AUC: +0.0001,
+0.0001, +0.0004, -0.0001 (all p > 0.1). So: no harm on CTCVR, a small CVR loss everywhere,
no trend with the cascade strength. ESMM CVR AUC 0.7125 / 0.7326 / 0.7333 / 0.6900.
"""

from pathlib import Path

from autoheri_jax.config import load_config
from autoheri_jax.study import PRECISE_FIELDS as FIELDS
from autoheri_jax.study import Study

BASE = Path(__file__).resolve().parents[1] / "configs" / "study_base.py"
KEYS = ("ctr", "cvr", "ctcvr")
STRENGTHS = ("0", "0.25", "0.5", "0.9")


def get_study() -> Study:
    return Study(
        name="cascade_sweep",
        base=load_config(BASE),
        arms={f"cascade_{s}": [f"data.cascade_strength={s}"] for s in STRENGTHS},
        seeds=5,
        seed_modes=("data",),
        keys=KEYS,
        fields=FIELDS,
        compare_to="esmm",
        description="AutoHERI vs ESMM as the share of conversion propensity built from click's "
        "hidden interaction (data.cascade_strength) goes from 0 to 0.9.",
    )
