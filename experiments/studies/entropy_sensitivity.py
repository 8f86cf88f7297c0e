"""Entropy sensitivity: how the weight of the edge-entropy regulariser changes the search.

Command:
  autoheri study --config experiments/studies/entropy_sensitivity.py \
      --workdir runs/studies/entropy_sensitivity

Arms over experiments/configs/study_base.py: edge_search.entropy_weight 0, 0.001 (the default),
0.01, 0.1 (per edge, ramped in over the last 240 of 390 steps); everything else fixed. 5 seeds
with the data redrawn per seed, about 5 min on 2 CPU cores. The cost table's "kept edges"
column shows how many of the 9 candidates each weight keeps.
Expected: without entropy the probabilities end wherever the task loss leaves them (the
threshold then decides); with it they are pushed to 0 or 1 on the side the evidence chose, so
the test metrics should move by less than the seed noise across weights. Measured:
experiments/README.md (Results).
"""

from pathlib import Path

from autoheri_jax.config import GRADIENT_SEARCH, load_config
from autoheri_jax.study import PRECISE_FIELDS as FIELDS
from autoheri_jax.study import Study

BASE = Path(__file__).resolve().parents[1] / "configs" / "study_base.py"
KEYS = ("ctr", "cvr", "ctcvr")
WEIGHTS = ("0", "0.001", "0.01", "0.1")


def get_study() -> Study:
    return Study(
        name="entropy_sensitivity",
        base=load_config(BASE, GRADIENT_SEARCH),
        arms={f"entropy_{w}": [f"edge_search.entropy_weight={w}"] for w in WEIGHTS},
        seeds=5,
        seed_modes=("data",),
        keys=KEYS,
        fields=FIELDS,
        compare_to="esmm",
        description="Weight of the entropy regulariser on the edge probabilities during search.",
    )
