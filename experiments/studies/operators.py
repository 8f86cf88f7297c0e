"""Aggregation operators: concat + linear (the paper) vs gated sum vs attention vs a searched
per-edge choice among the three (the paper's stated future work).

Command:
  autoheri study --config experiments/studies/operators.py --workdir runs/studies/operators

Arms over experiments/configs/study_base.py, all with hierarchical searched edges:
`concat`, `gated_sum`, `attention` and `search` (`model.aggregation`); the "between arms" table
pairs each operator with concat seed by seed. 5 seeds with the data redrawn per seed, about 8
min on 2 CPU cores.
Expected: an operator helps only if its paired difference to concat has a CI above 0.
Measured: experiments/README.md (Results).
"""

from pathlib import Path

from autoheri_jax.config import GRADIENT_SEARCH, load_config
from autoheri_jax.study import PRECISE_FIELDS as FIELDS
from autoheri_jax.study import Study

BASE = Path(__file__).resolve().parents[1] / "configs" / "study_base.py"
KEYS = ("ctr", "cvr", "ctcvr")
OPERATORS = ("concat", "gated_sum", "attention", "search")


def get_study() -> Study:
    return Study(
        name="operators",
        base=load_config(BASE, GRADIENT_SEARCH),
        arms={op: [f"model.aggregation={op}"] for op in OPERATORS},
        seeds=5,
        seed_modes=("data",),
        keys=KEYS,
        fields=FIELDS,
        compare_to="esmm",
        arm_pairs=tuple((op, "concat") for op in OPERATORS[1:]),
        description="Aggregation operators: concat vs gated sum vs attention vs searched choice.",
    )
