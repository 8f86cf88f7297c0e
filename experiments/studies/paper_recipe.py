"""The paper's search recipe against this project's defaults, on the same worlds and seeds.

Command:
  autoheri study --config experiments/studies/paper_recipe.py \
      --workdir runs/studies/paper_recipe --seeds 10

The arms of experiments/studies/search_decides.py (transfer: cascade 0.95; no_cascade: 0) with
the search as the paper and this project before issue 10 ran it: per-edge Adam on the edge
logits from step 0 (no warm-up), entropy at full weight from step 0 (0.1 on the mean entropy
over the 9 edges = 0.0111 per edge), edge kernel rows drawn with their own Glorot fan-in.
Every data and model seed equals search_decides's, so ESMM and the other baselines are the
same runs and the AutoHERI rows of the two studies pair seed by seed. 10 seeds, about 10 min on
2 CPU cores.
Expected: the paper's recipe decides before the weights have learned, so its kept sets follow
the first noisy steps rather than the regime. Measured: experiments/README.md (Results).
"""

from pathlib import Path

from autoheri_jax.config import load_config
from autoheri_jax.study import PRECISE_FIELDS, Study

BASE = Path(__file__).resolve().parents[1] / "configs" / "study_base.py"
PAPER = [
    "search.arch_optimizer=adam",
    "search.arch_warmup_steps=0",
    "search.entropy_weight=0.0111",
    "search.entropy_warmup_steps=0",
    "model.edge_init=block",
]


def get_study() -> Study:
    return Study(
        name="paper_recipe",
        base=load_config(BASE, ["baselines=esmm,hierarchical_all_on,random_matched", *PAPER]),
        arms={
            "transfer": ["data.cascade_strength=0.95"],
            "no_cascade": ["data.cascade_strength=0"],
        },
        seeds=10,
        seed_modes=("data",),
        compare_to="esmm",
        keys=("cvr", "ctcvr"),
        fields=PRECISE_FIELDS,
        model_pairs=(("autoheri", "random_matched"), ("autoheri", "hierarchical_all_on")),
        description="search_decides's arms searched with the paper's recipe.",
    )
