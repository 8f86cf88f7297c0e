"""The world every study in experiments/studies/ starts from: the transfer regime.

Command:
  autoheri run --config experiments/configs/study_base.py --workdir runs/study_base

Why this world. Edges can only help when the upstream tower has learned something the
downstream tower cannot learn alone. Here the conversion propensity reuses click's hidden
user x item interaction almost entirely (cascade strength 0.95) and that interaction is
learnable (2 latent dimensions, 2,000 users and 2,000 items, ~200 impressions each), while
conversions are scarce: 400k training impressions, CTR 10%, CVR among clicks 3%, so ~40k clicks
teach the click tower and only ~1.2k conversions the conversion tower. With
`data.cascade_strength=0` the same world shares nothing between the stages (the control regime
of experiments/studies/search_decides.py). 100k validation impressions; the test split is a
separate draw of 1M impressions, scored against the simulator's true probabilities (soft-label
AUC, excess log-loss), so a study's spread is that of training and data, not of label noise.

Model: embed 8, towers 64-32-16 (9 hierarchical candidate edges), batch 1024, one epoch (390
steps) of search and of retraining: in a one-seed tuning trial on this world with 8 latent
dimensions, 3 epochs lowered every model's validation scores (the id embeddings overfit), so
one epoch it is; not a study result. The search is the default masked one; the studies
that pin `edge_search.method=gradient` (GRADIENT_SEARCH) get GradientSearch's defaults, which
fit this 390-step search: weights alone for 150 steps (arch_warmup_steps), then edge logits
with the shared-RMS Adam (arch_optimizer=shared_adam, arch_lr 0.05), entropy ramped in from 0
over the last 240 steps (entropy_weight 0.001 per edge); edge blocks start at zero
(model.edge_init=zero).
Expected: about 30 s per run on 2 CPU cores. The measured results are in
experiments/README.md (studies over 5 seeds with the data redrawn per seed).
"""

from autoheri_jax.config import (
    CheckpointConfig,
    Config,
    DataConfig,
    ModelConfig,
    TrainConfig,
)


def get_config() -> Config:
    return Config(
        name="study_base",
        data=DataConfig(
            num_train=400_000,
            num_valid=100_000,
            num_test=1_000_000,
            num_users=2_000,
            num_items=2_000,
            latent_dim=2,
            click_rate=0.1,
            stage_rates=(0.03,),
            cascade_strength=0.95,
        ),
        model=ModelConfig(embed_dim=8, hidden=(64, 32, 16), edge_mode="hierarchical"),
        search=TrainConfig(epochs=1, batch_size=1024, lr=3e-3, log_every=50),
        retrain=TrainConfig(epochs=1, batch_size=1024, lr=3e-3, log_every=50),
        baselines=("esmm",),
        eval_batch_size=16384,
        checkpoint=CheckpointConfig(every_steps=1_000_000, keep_best=False, async_save=False),
    )
