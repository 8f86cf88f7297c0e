"""A world no default was chosen on: cascade strength 0.8, between the transfer (0.95) and
control (0) worlds every search default was measured on, seeds 0-9 redrawing world and data.

Command:
  autoheri study --config experiments/studies/held_out.py --workdir runs/studies/held_out

The same runs as search_decides.py (masked search, then the derived model, ESMM, all-on and
random_matched retrained; 1M-impression test draw scored against the true probabilities), one
arm. About 12 min on 2 CPU cores. Its ground truth: experiments/ground_truth.py --study
experiments/studies/held_out.py.
Expected and measured: see experiments/README.md ("The masked search").
"""

from pathlib import Path

from autoheri_jax.config import load_config
from autoheri_jax.study import PRECISE_FIELDS, Study

BASE = Path(__file__).resolve().parents[1] / "configs" / "study_base.py"


def get_study() -> Study:
    return Study(
        name="held_out",
        base=load_config(BASE, ["baselines=esmm,hierarchical_all_on,random_matched"]),
        arms={"cascade_0.8": ["data.cascade_strength=0.8"]},
        seeds=10,
        seed_modes=("data",),
        compare_to="esmm",
        keys=("cvr", "ctcvr"),
        fields=PRECISE_FIELDS,
        model_pairs=(("autoheri", "random_matched"), ("autoheri", "hierarchical_all_on")),
        description="The masked search in a held-out world (cascade 0.8) no default was chosen on.",
    )
