"""One-shot search vs evolutionary search: quality of the found architecture, and its cost.

Command:
  autoheri study --config experiments/studies/oneshot_vs_evolution.py \
      --workdir runs/studies/oneshot_vs_evolution

Arms over experiments/configs/study_base.py (9 hierarchical candidate edges, 390 steps/epoch):
  oneshot             the one-shot search: 1 epoch of the supernet = 390 steps
  evolution_matched   aging evolution, population 4, sample 2, 8 cycles = 12 evaluations of
                      32 steps each (on the first 32 x 1024 training rows): <= 390 train
                      steps, the one-shot budget
  evolution_full      the same evolution, each candidate 1 full epoch (390 steps, as long as the
                      whole one-shot search): ~12x the one-shot budget
Candidates are scored by minus the validation entire-space log-loss (evolution.metric =
neg_valid_loss: all 100k validation impressions count, where a validation CVR AUC rests on ~300
conversions); every arm retrains its architecture and ESMM for 1 epoch and is scored on the
1M-impression test draw. The "between arms" table pairs each evolution arm with oneshot; the
cost table gives search steps, seconds and distinct candidates trained (seconds are mostly
compilation: every candidate is its own XLA program). 5 seeds with the data redrawn per seed,
about 12 min on 2 CPU cores.
Expected (the paper's claim): one-shot about as good as evolution at a fraction of the cost.
Measured: experiments/README.md (Results).
"""

from pathlib import Path

from autoheri_jax.config import GRADIENT_SEARCH, load_config
from autoheri_jax.study import PRECISE_FIELDS as FIELDS
from autoheri_jax.study import Study

BASE = Path(__file__).resolve().parents[1] / "configs" / "study_base.py"
KEYS = ("ctr", "cvr", "ctcvr")
EVOLUTION = ["evolution.population=4", "evolution.sample=2", "evolution.cycles=8"]


def get_study() -> Study:
    return Study(
        name="oneshot_vs_evolution",
        base=load_config(BASE, [*GRADIENT_SEARCH, *EVOLUTION, "evolution.metric=neg_valid_loss"]),
        arms={
            "oneshot": [],
            "evolution_matched": ["evolution.budget_epochs=1", "evolution.budget_steps=32"],
            "evolution_full": ["evolution.budget_epochs=1", "evolution.budget_steps=0"],
        },
        methods={"evolution_matched": "evolution", "evolution_full": "evolution"},
        seeds=5,
        seed_modes=("data",),
        keys=KEYS,
        fields=FIELDS,
        compare_to="esmm",
        arm_pairs=(("evolution_matched", "oneshot"), ("evolution_full", "oneshot")),
        description="Architecture quality and search cost: one-shot vs aging evolution.",
    )
