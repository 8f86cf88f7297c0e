"""The README's main job as a short study: its seed-to-seed spread, so its table is read
against a measured noise level rather than as one draw.

Command:
  autoheri study --config experiments/studies/default_seeds.py \
      --workdir runs/studies/default_seeds

One arm: experiments/configs/default.py with early stopping off (500k training impressions,
towers 128-64-32, search 2 epochs; AutoHERI, ESMM, parallel_all_on and hierarchical_all_on
retrained 2 epochs), 3 seeds, each redrawing the simulated world and its data and the model
seeds. About 1-2 min per seed on 2 CPU cores. Early stopping (the main job's default since
2026-12-07) is pinned off here (`OFF`), so the study is the one measured below and its
recorded tables reproduce.
Expected: seed-to-seed standard deviations of the AUCs of a few thousandths, so single-run
differences of that size between models are noise. Measured: see experiments/README.md ("The
README's main job over seeds").
"""

from pathlib import Path

from autoheri_jax.config import load_config
from autoheri_jax.study import PRECISE_FIELDS, Study

BASE = Path(__file__).resolve().parents[1] / "configs" / "default.py"
OFF = ("search.early_stop_patience=0", "retrain.early_stop_patience=0")


def get_study() -> Study:
    return Study(
        name="default_seeds",
        base=load_config(BASE, OFF),
        arms={"default": []},
        seeds=3,
        seed_modes=("data",),
        compare_to="esmm",
        fields=PRECISE_FIELDS,
        model_pairs=(("autoheri", "hierarchical_all_on"),),
        description="The README's default run over 3 seeds (data and models redrawn).",
    )
