"""Every model family ranked: the paper's comparators and today's debiasing baselines.

Command:
  autoheri study --config experiments/studies/comparators.py \
      --workdir runs/studies/comparators
  python experiments/rank_families.py runs/studies/comparators/study.json

Arms over experiments/configs/study_base.py (its docstring explains the world):
  transfer          cascade strength 0.95 (conversion reuses click's hidden interaction)
  no_cascade        cascade strength 0 (the stages share nothing)
  transfer_3stage   click -> activation -> conversion (rates 0.2 / 0.15, ~1.2k training
  no_cascade_3stage conversions as in 2 stages), where ESM² is defined: esmm, aitm and esm2
Two-stage arms train every family beside the searched AutoHERI: esmm, shared_bottom, mmoe,
ple, aitm, dbmtl, gmsl, multi_dr, escm2_ips, escm2_dr, dcmt, with the same embedding (8), the
same budget (one epoch, batch 1024, Adam 3e-3) and comparable widths (towers 64-32-16; shared
bottom 32-16 and experts 32 with 16-wide task towers). Every family's own hyperparameters are
the published defaults (objectives.py), not tuned here; propensity clip 0.05.
5 seeds; each seed redraws the world and its data (data.seed) and the model seeds. Scored on a
separate 1M-impression draw against the true probabilities: cvr.soft_auc_all (pCVR over every
impression, the quantity debiasing targets), cvr.excess_nll_all, and calibration (cvr.ece on
clicked rows, cvr.mae_true_all against the true CVR on every impression). About 25 min on 2
CPU cores.
Expected: the debiasing families' advantage is in calibration over all impressions
(mae_true_all), not necessarily in ranking; whether any family beats ESMM here is what the
study measures. Measured: experiments/README.md (Results, "Every family ranked").
"""

from pathlib import Path

from autoheri_jax.config import GRADIENT_SEARCH, load_config
from autoheri_jax.study import PRECISE_FIELDS, Study

BASE = Path(__file__).resolve().parents[1] / "configs" / "study_base.py"
TWO_STAGE = (
    "esmm",
    "shared_bottom",
    "mmoe",
    "ple",
    "aitm",
    "dbmtl",
    "gmsl",
    "multi_dr",
    "escm2_ips",
    "escm2_dr",
    "dcmt",
)
THREE_STAGE = ("esmm", "aitm", "esm2")
WIDTHS = ["model.bottom_hidden=[32,16]", "model.expert_hidden=[32]", "model.tower_hidden=[16]"]
THREE = ["data.num_stages=3", "data.stage_rates=[0.2,0.15]", f"baselines={','.join(THREE_STAGE)}"]
FIELDS = (*PRECISE_FIELDS, "ece", "mae_true_all")


def get_study() -> Study:
    return Study(
        name="comparators",
        base=load_config(BASE, [*GRADIENT_SEARCH, f"baselines={','.join(TWO_STAGE)}"]),
        arms={  # the widths are the 2-stage baselines' own settings (none of THREE_STAGE's)
            "transfer": ["data.cascade_strength=0.95", *WIDTHS],
            "no_cascade": ["data.cascade_strength=0", *WIDTHS],
            "transfer_3stage": ["data.cascade_strength=0.95", *THREE],
            "no_cascade_3stage": ["data.cascade_strength=0", *THREE],
        },
        seeds=5,
        seed_modes=("data",),
        compare_to="esmm",
        keys=("cvr", "ctcvr"),
        fields=FIELDS,
        description="Every model family on the transfer and no-cascade worlds (2 and 3 stages).",
    )
