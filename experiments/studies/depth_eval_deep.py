"""The searches judged on the second world whose instrument check passed: `deep` (conversion
reuses the click term itself) at 4M training impressions, on evaluation seeds 1000-1009, run
once.

Command (after the commit that adds this file, which freezes the defaults it runs with):
  autoheri study --config experiments/studies/depth_eval_deep.py \
      --workdir runs/studies/depth_eval_deep

The world: planted_worlds.py's `deep` arm (cascade strength 0.95, Zipf exponent 0.8, 300k
test draw) with 4M training impressions, the world of the instrument check in
experiments/README.md ("The instrument check at 4M rows", seeds 500-509), which it passed by
the criterion written at d95cc84: the best edge from click layer 1 or 2 (0.1->1.0) beats each
layer-0 edge with a paired CI above 0. Its depth pattern is weaker than the cascade world's:
the mean deeper edge beats the mean layer-0 edge by +0.0037 [+0.0024, +0.0050], every deeper
edge beats every layer-0 edge in 3 of 10 seeds only, and 0.0->1.0 alone also beats every edge
on. No setting was chosen on this world: the arms run the defaults frozen for issue 32.

Arms: the default search (masked: per-edge evidence, then the selection's paired margin) and
the paper's one-shot search as written, as in depth_eval.py. About 2-4 min a run on 2 cores.

Read-outs, written before the run, as in depth_eval.py (cvr* sAUC on the test draw, paired by
seed, mean [95% CI]): AutoHERI >= max(ESMM, all-on) - 0.003; the right source depth (at least
one edge kept, none from click layer 0) in >= 80% of seeds (`python experiments/kept_depth.py
runs/studies/depth_eval_deep`); the paper's claim: AutoHERI above ESMM and above all-on, each
CI above 0.
Expected (where it goes) and measured: experiments/README.md ("Evaluation seeds at 4M rows").
"""

import dataclasses
from pathlib import Path

from autoheri_jax.study import load_study

PLANTED = Path(__file__).resolve().parent / "planted_worlds.py"


def get_study():
    study = load_study(PLANTED)
    world = [*study.arms["deep"], "data.num_train=4000000"]
    return dataclasses.replace(
        study,
        name="depth_eval_deep",
        arms={f"deep4m_{m}": [*world, f"edge_search.method={m}"] for m in ("masked", "paper")},
        first_seed=1000,  # evaluation seeds, run once
        description="The default and the paper's search on the 4M-row deep world, whose "
        "ground truth plants a source depth; evaluation seeds 1000-1009.",
    )
