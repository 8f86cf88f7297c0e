"""Worlds with a planted answer (autoheri_jax/data/worlds.py): does a search find *which*
edges matter? Each arm is one world; the ground truth must show that the world works before
any search is judged on it.

Commands:
  the instrument check (experiments/README.md, "Planted worlds: the instrument"), first:
    python experiments/ground_truth.py --study experiments/studies/planted_worlds.py \
        --workdir runs/ground_truth/planted_worlds --seeds 10 --first-seed 500
  the search on the worlds that pass it, on evaluation seeds 1000-1009, once the defaults
  are frozen (`--set edge_search.method=...` for each method):
    autoheri study --config experiments/studies/planted_worlds.py \
        --workdir runs/studies/planted_worlds

Arms over experiments/configs/study_base.py (2,000 users and items, 2 latent dimensions,
400k training impressions, CTR 10%, CVR among clicks 3%, towers 64-32-16, 9 hierarchical
candidate edges), every one with cascade strength 0.95 (how much of the conversion term is the
shared quantity) and Zipf exponent 0.8: at the base's 1.1 the few most popular (user, item)
pairs carry so many impressions that the click output of `shallow` explains 5.4-6.6% of s_a's
variance (measured on 200k rows, seed 3), at 0.8 0.25% (the design asks for < 1%). The first
check ran at 0.5 (0.03%), where even the cascade world's edges stop helping (tuning seed 0,
validation cvr* sAUC, all - none: -0.013 at 0.5, +0.012 at 0.8). The test draw is 300k
impressions (the base's 1M made the 20-architecture ground truth 150 s a world-seed): scored
against the true probabilities, its rows add little noise.

  shallow      conversion reuses s_a, which click needs only inside tanh(2 s_a)·tanh(2 s_b)
  deep         conversion reuses the click term itself
  null         conversion shares nothing with click (same click formula)
  planted_0-2  teacher layer 0 feeds a 1-layer read-out (edge 0->2 planted)
  planted_2-0  teacher layer 2 feeds a 3-layer read-out (edge 2->0 planted)
  planted_1-1  teacher layer 1 feeds a 2-layer read-out (edge 1->1 planted)

Expected and measured: experiments/README.md ("Planted worlds: the instrument"), which
gives each world's verdict; a world that fails there judges no search.
Seeds: 0-99 are tuning seeds (defaults may be chosen on their validation metrics), 500-599
check instruments (the ground truth of a world), 1000+ are evaluation seeds, run once after
the defaults are frozen (experiments/README.md, "Protocol").
"""

from pathlib import Path

from autoheri_jax.config import load_config
from autoheri_jax.study import PRECISE_FIELDS, Study

BASE = Path(__file__).resolve().parents[1] / "configs" / "study_base.py"
WORLD = ["data.cascade_strength=0.95", "data.zipf_exponent=0.8", "data.num_test=300000"]


def get_study() -> Study:
    planted = {
        f"planted_{e.replace('->', '-')}": [*WORLD, "data.world=planted", f"data.planted_edge={e}"]
        for e in ("0->2", "2->0", "1->1")
    }
    return Study(
        name="planted_worlds",
        base=load_config(BASE, ["baselines=esmm,hierarchical_all_on"]),
        arms={
            "shallow": [*WORLD, "data.world=shallow"],
            "deep": [*WORLD, "data.world=deep"],
            "null": [*WORLD, "data.world=null"],
            **planted,
        },
        seeds=10,
        first_seed=1000,  # evaluation seeds
        seed_modes=("data",),
        compare_to="esmm",
        keys=("cvr", "ctcvr"),
        fields=PRECISE_FIELDS,
        model_pairs=(("autoheri", "hierarchical_all_on"),),
        description="Worlds whose right edges are known in advance: shallow, deep, null and "
        "three planted positions.",
    )
