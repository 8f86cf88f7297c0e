"""The search method the first evaluation studies left out, in the same worlds and seeds:
`gradient` (this project's one-shot variant: arch warm-up, shared-RMS Adam, entropy ramp).
(The masked search's evidence alone needs no run of its own: every masked run records the
edges its evidence kept before the selection, in architecture.json.)

Command (evaluation seeds 1000-1009, run once; the defaults were frozen in 9dc867a):
  autoheri study --config experiments/studies/gradient_eval.py --workdir runs/studies/gradient_eval

Arms: the null world of null_world.py (data.world=null, Zipf 0.8, 300k test impressions) and
the cascade worlds of cascade_eval.py (transfer: cascade 0.95; control: cascade 0; the study
base's Zipf 1.1; here with the 300k test draw), each searched by `gradient`. Each run retrains
the derived model, ESMM and every edge on; cvr* sAUC on the test draw against the true
probabilities, paired with ESMM by seed. The masked default, the paper's search and the
ablation search in the same worlds and seeds: null_world.py and cascade_eval.py. Targets
(issue 32): AutoHERI >= max(ESMM, all-on) - 0.003; in null and control AutoHERI >= ESMM -
0.002 with at most 1 kept edge on average.
Expected and measured: experiments/README.md ("Evaluation seeds").
"""

import dataclasses
from pathlib import Path

from autoheri_jax.study import load_study

PLANTED = Path(__file__).resolve().parent / "planted_worlds.py"


def get_study():
    study = load_study(PLANTED)
    worlds = {
        "null": list(study.arms["null"]),
        "transfer": ["data.cascade_strength=0.95", "data.num_test=300000"],
        "control": ["data.cascade_strength=0.0", "data.num_test=300000"],
    }
    arms = {f"{w}_gradient": [*o, "edge_search.method=gradient"] for w, o in worlds.items()}
    return dataclasses.replace(
        study,
        name="gradient_eval",
        arms=arms,
        model_pairs=(("autoheri", "hierarchical_all_on"),),
        description="The gradient search in the null and cascade worlds, on evaluation seeds "
        "1000-1009.",
    )
