"""The searches judged on the first world whose instrument check passed: the cascade (transfer)
world at 4M training impressions, on evaluation seeds 1000-1009, run once.

Command (after the commit that adds this file, which freezes the defaults it runs with):
  autoheri study --config experiments/studies/depth_eval.py --workdir runs/studies/depth_eval

The world: search_decides.py's transfer arm (cascade strength 0.95) with 4M training
impressions, Zipf exponent 0.8 and a 300k test draw, the world of the instrument check in
experiments/README.md ("The instrument check at 4M rows", seeds 500-509). There the ground
truth planted a *source depth*: each edge from click layer 1 or 2, retrained alone, beat each
edge from click layer 0 (paired CIs above 0), and the best single deeper edge beat every edge
on by +0.0040 [+0.0020, +0.0061] cvr* sAUC. No setting was chosen on this world: the arms run
the defaults frozen for issue 32 (experiments/README.md, "Protocol").

Arms: the default search (masked: per-edge evidence, then the selection's paired margin) and
the paper's one-shot search as written. Each run retrains the derived model, ESMM and every
edge on (as lanes of one batch where the method allows). About 2-2.5 min a run on 2 CPU cores
(133-145 s measured, machine shared with CI).

Read-outs, written before the run (cvr* sAUC on the test draw, paired by seed, mean [95% CI]):
  * the issue-32 targets: AutoHERI >= max(ESMM, all-on) - 0.003; the right source depth kept
    in >= 80% of seeds, where "right" means at least one edge kept and no kept edge from click
    layer 0; the paper's claim: AutoHERI above ESMM and above all-on, each CI above 0;
  * per arm: kept edges per seed and each edge's keep frequency next to the ground truth's
    add-one table.
Expected (not a prediction of the outcome, only where it goes) and measured:
experiments/README.md ("Evaluation seeds at 4M rows").
"""

import dataclasses
from pathlib import Path

from autoheri_jax.study import load_study

SEARCH_DECIDES = Path(__file__).resolve().parent / "search_decides.py"
WORLD = [
    "data.cascade_strength=0.95",
    "data.num_train=4000000",
    "data.zipf_exponent=0.8",
    "data.num_test=300000",
]


def get_study():
    study = load_study(SEARCH_DECIDES)
    base = dataclasses.replace(study.base, baselines=("esmm", "hierarchical_all_on"))
    return dataclasses.replace(
        study,
        name="depth_eval",
        base=base,
        arms={
            f"transfer4m_{method}": [*WORLD, f"edge_search.method={method}"]
            for method in ("masked", "paper")
        },
        first_seed=1000,  # evaluation seeds, run once
        model_pairs=(("autoheri", "hierarchical_all_on"),),
        description="The default and the paper's search on the 4M-row cascade world, whose "
        "ground truth plants a source depth; evaluation seeds 1000-1009.",
    )
