"""The README's main job searched with the paper's recipe: the control for
experiments/studies/default_seeds.py.

Command:
  autoheri study --config experiments/studies/default_paper_recipe.py \
      --workdir runs/studies/default_paper_recipe

experiments/configs/default.py with the search as the paper and this project before issue 10
ran it: per-edge Adam (arch_lr 0.03) on the edge logits from step 0, entropy at full weight
from step 0 (0.1 on the mean over 9 edges = 0.0111 per edge), edge kernel rows with their own
Glorot fan-in. The same 3 seeds as default_seeds (data and models redrawn), about 1-2 min per
seed on 2 CPU cores.
Expected: edges kept by the first noisy steps (the same grid whatever the data), so a derived
model that differs from ESMM mostly through the edge blocks' initialisation. Measured: the
README ("What the main job prints and writes").
"""

from pathlib import Path

from autoheri_jax.config import load_config
from autoheri_jax.study import PRECISE_FIELDS, Study

BASE = Path(__file__).resolve().parents[1] / "configs" / "default.py"
PAPER = [
    "search.arch_optimizer=adam",
    "search.arch_lr=0.03",
    "search.arch_warmup_steps=0",
    "search.entropy_weight=0.0111",
    "search.entropy_warmup_steps=0",
    "model.edge_init=block",
]


def get_study() -> Study:
    return Study(
        name="default_paper_recipe",
        base=load_config(BASE, PAPER),
        arms={"default": []},
        seeds=3,
        seed_modes=("data",),
        compare_to="esmm",
        fields=PRECISE_FIELDS,
        model_pairs=(("autoheri", "hierarchical_all_on"),),
        description="The README's default run, searched with the paper's recipe, 3 seeds.",
    )
