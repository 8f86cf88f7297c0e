"""The bypass world: which *tower's* edges matter? A 3-stage funnel whose answer is planted.

click -> activation -> conversion (autoheri_jax/data/worlds.py, `bypass`): the conversion
term is 0.95·s0 + sqrt(1 - 0.95²)·s2, s0 the click stage's interaction, while activation has
its own s1. So every edge from the click tower into the conversion tower should help (it
carries s0, which the click tower learns from ~40k clicks and the conversion tower cannot
learn from ~1.2k conversions), and every other edge (click -> activation, activation ->
conversion) carries nothing the receiving tower needs. The depth worlds of planted_worlds.py
failed because the click tower does not learn their click stages (experiments/layer_probe.py);
this world's answer is the one quantity it does learn.

Commands:
  the instrument check first (instrument seeds 500-509, criterion in ground_truth.py):
    python experiments/ground_truth.py --study experiments/studies/bypass_world.py \
        --workdir runs/ground_truth/bypass_world --seeds 10 --first-seed 500 --arms masked
  then, once it passes, the search methods on evaluation seeds 1000-1009, once:
    autoheri study --config experiments/studies/bypass_world.py --workdir runs/studies/bypass_world

The world: experiments/configs/study_base.py's (2,000 users and items, 2 latent dimensions,
400k training impressions, 100k validation, a 300k-impression test draw) with 3 stages (CTR
10%, activation | click 20%, conversion | activation 15%: ~1.2k training conversions, as the
2-stage base), Zipf 0.8 as planted_worlds.py, towers 32-16 with edges between all earlier
towers: 12 candidate edges (4 per task pair), 4 of them planted (0.i -> 2.j). Arms: the
default `masked` search, `paper` (the paper's one-shot search as written) and `ablation`
(the 26-architecture batch judged by the selection's margin).
Expected and measured: experiments/README.md ("The bypass world").
"""

import dataclasses
from pathlib import Path

from autoheri_jax.study import load_study, method_arms

PLANTED = Path(__file__).resolve().parent / "planted_worlds.py"
WORLD = [
    "data.cascade_strength=0.95",
    "data.zipf_exponent=0.8",
    "data.num_test=300000",
    "data.num_stages=3",
    "data.stage_rates=[0.2,0.15]",
    "data.world=bypass",
    "model.hidden=[32,16]",
    "model.edge_pairs=all",
]


def get_study():
    study = load_study(PLANTED)
    return dataclasses.replace(
        study,
        name="bypass_world",
        arms=method_arms(WORLD),
        keys=("cvr", "ctcvr"),
        model_pairs=(("autoheri", "hierarchical_all_on"),),
        description="A 3-stage world whose conversion reuses the click stage and skips the "
        "middle one: every click -> conversion edge should help, no other edge.",
    )
