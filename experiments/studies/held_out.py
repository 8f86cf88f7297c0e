"""A world no default was chosen on: cascade strength 0.8, between the transfer (0.95) and
control (0) worlds every search default was measured on, seeds 0-9 redrawing world and data.

Command:
  autoheri study --config experiments/studies/held_out.py --workdir runs/studies/held_out

The runs of search_decides.py (masked search, then the derived model, ESMM, all-on and
random_matched retrained; 1M-impression test draw scored against the true probabilities), one
arm. About 12 min on 2 CPU cores. Its ground truth: experiments/ground_truth.py --study
experiments/studies/held_out.py.
Expected and measured: see experiments/README.md ("The masked search").
"""

import dataclasses
from pathlib import Path

from autoheri_jax.study import Study, load_study

SEARCH_DECIDES = Path(__file__).resolve().parent / "search_decides.py"


def get_study() -> Study:
    return dataclasses.replace(
        load_study(SEARCH_DECIDES),
        name="held_out",
        arms={"cascade_0.8": ["data.cascade_strength=0.8"]},
        description="The masked search in a held-out world (cascade 0.8) no default was chosen on.",
    )
