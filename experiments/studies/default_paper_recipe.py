"""The README's main job searched with the paper's recipe: the control for
experiments/studies/default_seeds.py.

Command:
  autoheri study --config experiments/studies/default_paper_recipe.py \
      --workdir runs/studies/default_paper_recipe

experiments/studies/default_seeds.py (experiments/configs/default.py, 3 seeds, data and models
redrawn) with the search of `autoheri_jax.config.PAPER_SEARCH_RECIPE` at the arch learning rate
this config used before (0.03). The same seeds as default_seeds, so ESMM is the same run in
both. About 1-2 min per seed on 2 CPU cores.
Expected: edges kept by the first noisy steps (the same grid whatever the data). Measured:
experiments/README.md ("The README's main job over seeds").
"""

import dataclasses
from pathlib import Path

from autoheri_jax.config import PAPER_SEARCH_RECIPE
from autoheri_jax.study import Study, load_study, with_base_overrides

DEFAULT_SEEDS = Path(__file__).with_name("default_seeds.py")


def get_study() -> Study:
    study = with_base_overrides(
        load_study(DEFAULT_SEEDS), [*PAPER_SEARCH_RECIPE, "edge_search.arch_lr=0.03"]
    )
    return dataclasses.replace(
        study, name="default_paper_recipe", description="The default run, the paper's search."
    )
