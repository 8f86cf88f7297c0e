"""One-shot search vs evolutionary search: quality of the found architecture, and its cost.

Command:
  autoheri study --config experiments/studies/oneshot_vs_evolution.py \
      --workdir runs/studies/oneshot_vs_evolution

Arms over experiments/configs/study_base.py (9 hierarchical candidate edges, 156 steps/epoch):
  oneshot             the one-shot search: 1 epoch of the supernet = 156 steps
  evolution_matched   aging evolution, population 4, sample 2, 8 cycles = 12 evaluations of
                      13 steps each (on the first 13 x 512 training rows): <= 156 train steps,
                      the one-shot budget
  evolution_full      the same evolution, each candidate 1 full epoch (156 steps, as long as the
                      whole one-shot search): <= 1872 train steps, 12x the one-shot budget
Candidates are scored by validation CVR AUC; every arm retrains its architecture and ESMM for 1
epoch and is scored on test. The "between arms" table pairs each evolution arm with oneshot;
the cost table gives search steps, seconds and distinct candidates trained. Read the steps, not
the seconds: every candidate is its own XLA program, so an evolution's seconds are mostly
compilation and fall several-fold once the persistent compilation cache holds its masks.
3 seeds, about 5-8 min on 2 CPU cores.
Expected: at the matched budget each candidate sees 13 steps, too few to learn anything (its
validation AUCs sit near or below 0.5), so evolution_matched picks at random and is no better
than oneshot; evolution_full ranks real models but at 12x the train steps.
Measured with `--seeds 2` (630 s on a shared, loaded 2-core machine): minus oneshot, test CVR
AUC -0.0007 (p=0.24, matched) and -0.0001 (p=0.70, full), CTCVR AUC -0.0017 (p=0.22) and
-0.0003 (p=0.14): neither evolution beats the one-shot search. Search cost per seed: oneshot
156 steps, 11 s; evolution_matched 150 steps, 159 s; evolution_full 1794 steps, 110 s; 11.5
distinct candidates each (seconds mostly compilation; the full arm ran with a warmer cache).
"""

from pathlib import Path

from autoheri_jax.config import load_config
from autoheri_jax.study import PRECISE_FIELDS as FIELDS
from autoheri_jax.study import Study

BASE = Path(__file__).resolve().parents[1] / "configs" / "study_base.py"
KEYS = ("ctr", "cvr", "ctcvr")
EVOLUTION = ["evolution.population=4", "evolution.sample=2", "evolution.cycles=8"]


def get_study() -> Study:
    return Study(
        name="oneshot_vs_evolution",
        base=load_config(BASE, [*EVOLUTION, "evolution.metric=neg_valid_loss"]),
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
