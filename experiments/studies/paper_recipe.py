"""The paper's search recipe against this project's defaults, on the same worlds and seeds.

Command:
  autoheri study --config experiments/studies/paper_recipe.py \
      --workdir runs/studies/paper_recipe

experiments/studies/search_decides.py (transfer: cascade 0.95; no_cascade: 0; 10 seeds) with
the search as the paper and this project before issue 10 ran it
(`autoheri_jax.config.PAPER_SEARCH_RECIPE`: per-logit Adam on the edge logits from step 0,
entropy at full weight from step 0, edge kernel rows with their own Glorot fan-in). Every data
and model seed equals search_decides's, so ESMM is the same run in both and the AutoHERI rows
of the two studies pair seed by seed. About 10 min on 2 CPU cores.
Expected: the paper's recipe decides before the weights have learned, so its kept sets follow
the seed rather than the regime. Measured: experiments/README.md (Results).
"""

import dataclasses
from pathlib import Path

from autoheri_jax.config import PAPER_SEARCH_RECIPE
from autoheri_jax.study import Study, load_study, with_base_overrides

SEARCH_DECIDES = Path(__file__).with_name("search_decides.py")


def get_study() -> Study:
    study = with_base_overrides(load_study(SEARCH_DECIDES), PAPER_SEARCH_RECIPE)
    return dataclasses.replace(
        study, name="paper_recipe", description="search_decides's arms, the paper's search."
    )
