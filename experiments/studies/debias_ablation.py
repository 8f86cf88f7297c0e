"""Is the debiasing families' gain their loss or their implementation? ESMM's loss on their
towers (`esmm_stacked`) against their losses, in the worlds of the comparators study.

Command:
  autoheri study --config experiments/studies/debias_ablation.py \
      --workdir runs/studies/debias_ablation --vmap-seeds
  python experiments/rank_families.py runs/studies/debias_ablation

Arms transfer (cascade 0.95) and no_cascade (cascade 0) over experiments/configs/study_base.py,
as in experiments/studies/comparators.py. Models: esmm (network.py's towers), esmm_stacked
(ESMM's objective on the stacked towers of blocks.py that Multi-DR, ESCM² and DCMT use),
escm2_ips, multi_dr and dcmt. 5 seeds with the data redrawn per seed, trained with
--vmap-seeds (each model's 5 seeds in one vmapped step; equal to seed-by-seed runs within float
rounding, so escm2_ips, multi_dr and dcmt here reproduce the comparators study's figures to a
few 1e-4). About 10 min on 2 CPU cores.
Expected: if the comparators study's gain of the debiasing families over ESMM (no_cascade,
cvr soft AUC over every impression) comes from their loss, esmm_stacked sits with esmm and the
debiasing families stay above it; if it comes from the implementation, esmm_stacked moves up
with them. Measured: experiments/README.md (Results, "Every family ranked").
"""

from pathlib import Path

from autoheri_jax.config import GRADIENT_SEARCH, load_config
from autoheri_jax.study import PRECISE_FIELDS, Study

BASE = Path(__file__).resolve().parents[1] / "configs" / "study_base.py"
MODELS = ("esmm", "esmm_stacked", "escm2_ips", "multi_dr", "dcmt")


def get_study() -> Study:
    return Study(
        name="debias_ablation",
        base=load_config(BASE, [*GRADIENT_SEARCH, f"baselines={','.join(MODELS)}"]),
        arms={
            "transfer": ["data.cascade_strength=0.95"],
            "no_cascade": ["data.cascade_strength=0"],
        },
        seeds=5,
        seed_modes=("data",),
        compare_to="esmm",
        keys=("cvr", "ctcvr"),
        fields=(*PRECISE_FIELDS, "ece", "mae_true_all"),
        model_pairs=(
            ("escm2_ips", "esmm_stacked"),
            ("multi_dr", "esmm_stacked"),
            ("dcmt", "esmm_stacked"),
        ),
        description="The debiasing families' losses against ESMM's loss on the same towers.",
    )
