"""The small world every study in experiments/studies/ starts from (one run of it here).

Command:
  autoheri run --config experiments/configs/study_base.py --workdir runs/study_base
  autoheri evolve --config experiments/configs/study_base.py --workdir runs/sb_evo \
      && autoheri retrain --workdir runs/sb_evo && autoheri evaluate --workdir runs/sb_evo

80k training impressions (CTR ~8%, CVR among clicks ~20%, cascade strength 0.5) over a 4k-user,
8k-item world, 40k test impressions; embed 8, towers 32-16-8 (9 hierarchical candidate edges);
one epoch (156 steps of 512) of search, then the derived model and ESMM one epoch each;
checkpoints only at the end. One epoch, not two: at 2 epochs over 40k rows every model's test
AUC dropped (ESMM CVR AUC 0.721 -> 0.711) and models with edges dropped most (overfitting).
Expected: about 10 s per run on 2 unloaded CPU cores (a 5-seed study: minutes). Measured (seed 0,
`--set baselines=esmm,hierarchical_all_on`): test CVR AUC autoheri 0.7306, esmm 0.7332,
hierarchical_all_on 0.7272, oracle 0.8379; CTCVR AUC 0.8012 / 0.8008 / 0.8003 / 0.9006.
One seed is noise-level: the studies in experiments/studies/ test paired differences over seeds.
"""

from autoheri_jax.config import CheckpointConfig, Config, DataConfig, ModelConfig, TrainConfig


def get_config() -> Config:
    return Config(
        name="study_base",
        data=DataConfig(
            num_train=80_000,
            num_valid=10_000,
            num_test=40_000,
            num_users=4_000,
            num_items=8_000,
            click_rate=0.08,
            stage_rates=(0.2,),
            cascade_strength=0.5,
        ),
        model=ModelConfig(embed_dim=8, hidden=(32, 16, 8), edge_mode="hierarchical"),
        search=TrainConfig(
            epochs=1, batch_size=512, lr=3e-3, arch_lr=5e-2, entropy_weight=0.1, log_every=50
        ),
        retrain=TrainConfig(epochs=1, batch_size=512, lr=3e-3, entropy_weight=0.0, log_every=50),
        baselines=("esmm",),
        eval_batch_size=8192,
        checkpoint=CheckpointConfig(every_steps=1_000_000, keep_best=False, async_save=False),
    )
