"""Entropy sensitivity: how the weight of the edge-entropy regulariser changes the search.

Command:
  autoheri study --config experiments/studies/entropy_sensitivity.py \
      --workdir runs/studies/entropy_sensitivity

Arms over experiments/configs/study_base.py: search.entropy_weight 0, 0.01, 0.1 (the default),
1; everything else fixed. 5 seeds, about 4 min on 2 CPU cores. The cost table's "kept edges"
column shows how many of the 9 candidates each weight keeps.
Expected: at weight 0 the edge probabilities stay near where the task loss leaves them, so the
derived architecture varies more from seed to seed; large weights freeze the gates early near
their initial side. Test AUCs should move by less than the seed noise across 0.01-0.1.
Measured with `--seeds 2` (86 s): kept edges 4.5 / 4.5 / 5.5 / 4.5 of 9 for weights 0 / 0.01 /
0.1 / 1; AutoHERI minus ESMM CVR AUC -0.0054 / -0.0035 / -0.0042 / -0.0041, CTCVR AUC -0.0009 /
+0.0002 / +0.0004 / -0.0005 (every p > 0.1): no weight stands out at this size.
"""

from pathlib import Path

from autoheri_jax.config import load_config
from autoheri_jax.study import PRECISE_FIELDS as FIELDS
from autoheri_jax.study import Study

BASE = Path(__file__).resolve().parents[1] / "configs" / "study_base.py"
KEYS = ("ctr", "cvr", "ctcvr")
WEIGHTS = ("0", "0.001", "0.01", "0.1")


def get_study() -> Study:
    return Study(
        name="entropy_sensitivity",
        base=load_config(BASE),
        arms={f"entropy_{w}": [f"search.entropy_weight={w}"] for w in WEIGHTS},
        seeds=5,
        seed_modes=("data",),
        keys=KEYS,
        fields=FIELDS,
        compare_to="esmm",
        description="Weight of the entropy regulariser on the edge probabilities during search.",
    )
