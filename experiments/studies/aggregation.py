"""Aggregation: searched hierarchical edges vs searched parallel edges vs none (ESMM).

Command:
  autoheri study --config experiments/studies/aggregation.py --workdir runs/studies/aggregation

Arms over experiments/configs/study_base.py (the transfer regime): `hierarchical` (any click
layer may feed any conversion layer: 9 candidates) and `parallel` (same depth only: 3
candidates), each searched one-shot and retrained; "none" is the ESMM row every run also
trains. 5 seeds with the data redrawn per seed, about 4 min on 2 CPU cores. The "between arms"
table pairs the two searched models seed by seed.
Expected (the paper's claim): hierarchical >= parallel >= none. Measured: experiments/README.md
(Results).
"""

from pathlib import Path

from autoheri_jax.config import GRADIENT_SEARCH, load_config
from autoheri_jax.study import PRECISE_FIELDS as FIELDS
from autoheri_jax.study import Study

BASE = Path(__file__).resolve().parents[1] / "configs" / "study_base.py"
KEYS = ("ctr", "cvr", "ctcvr")


def get_study() -> Study:
    return Study(
        name="aggregation",
        base=load_config(BASE, GRADIENT_SEARCH),
        arms={
            "hierarchical": ["model.edge_mode=hierarchical"],
            "parallel": ["model.edge_mode=parallel"],
        },
        seeds=5,
        seed_modes=("data",),
        keys=KEYS,
        fields=FIELDS,
        compare_to="esmm",
        arm_pairs=(("hierarchical", "parallel"),),
        description="Searched hierarchical vs searched parallel aggregation vs none (ESMM).",
    )
