"""Main comparison: AutoHERI against every baseline registered in autoheri_jax.models.

Command:
  autoheri study --config experiments/studies/main_comparison.py \
      --workdir runs/studies/main_comparison

One arm over experiments/configs/study_base.py whose baselines are esmm, parallel_all_on,
hierarchical_all_on and, when registered in autoheri_jax.model.variants.VARIANTS (checked when this
file is loaded), random_mask, shared_bottom, mmoe, ple and aitm (shared bottom 32-16, experts
32, task towers 16). 5 seeds with the data redrawn per seed (random_mask draws a new mask per
seed); about 2 min per seed on 2 CPU cores.
Expected (the paper's claim): AutoHERI at or above ESMM and the all-on baselines, every model
well below the oracle. Measured: experiments/README.md (Results).
"""

import dataclasses
from pathlib import Path

from autoheri_jax.config import GRADIENT_SEARCH, ModelConfig, load_config
from autoheri_jax.model.variants import VARIANTS
from autoheri_jax.study import PRECISE_FIELDS as FIELDS
from autoheri_jax.study import Study

BASE = Path(__file__).resolve().parents[1] / "configs" / "study_base.py"
KEYS = ("ctr", "cvr", "ctcvr")
CORE = ("esmm", "parallel_all_on", "hierarchical_all_on")
OPTIONAL = ("random_mask", "shared_bottom", "mmoe", "ple", "aitm")
# Widths of the other families, set only where ModelConfig has the field.
FAMILY_WIDTHS = {"bottom_hidden": "[32,16]", "expert_hidden": "[32]", "tower_hidden": "[16]"}


def get_study() -> Study:
    baselines = [*CORE, *(m for m in OPTIONAL if m in VARIANTS)]
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    widths = [f"model.{k}={v}" for k, v in FAMILY_WIDTHS.items() if k in fields]
    return Study(
        name="main_comparison",
        base=load_config(BASE, [*GRADIENT_SEARCH, f"baselines={','.join(baselines)}", *widths]),
        arms={"main": []},
        seeds=5,
        seed_modes=("data",),
        keys=KEYS,
        fields=FIELDS,
        compare_to="esmm",
        description=f"AutoHERI vs {', '.join(baselines)}.",
    )
