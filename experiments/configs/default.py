"""The README's main job: hierarchical one-shot search on the built-in funnel simulator.

Command:
  autoheri run --config experiments/configs/default.py --workdir runs/default

500k training impressions (CTR ~4%, CVR among clicks ~10%, cascade strength 0.5), 23 Ali-CCP
fields, embed 16, towers 128-64-32; search 2 epochs, then the derived model, ESMM and the
parallel / hierarchical all-on models each retrain 2 epochs.
Expected (measured 2026-11-29 on 2 CPU cores: 58 s wall, one seed): the search keeps 7
of 9 edges; test AUC ctr / cvr / ctcvr: autoheri 0.677 / 0.610 / 0.704, esmm 0.676 / 0.585 /
0.677, oracle 0.804 / 0.779 / 0.881. Every model stays well below the oracle.
"""

from autoheri_jax.config import Config, DataConfig, ModelConfig, TrainConfig


def get_config() -> Config:
    return Config(
        name="default",
        data=DataConfig(num_train=500_000, num_valid=20_000, num_test=50_000, cascade_strength=0.5),
        model=ModelConfig(embed_dim=16, hidden=(128, 64, 32), edge_mode="hierarchical"),
        search=TrainConfig(
            epochs=2, batch_size=1024, lr=2e-3, arch_warmup_steps=375, entropy_warmup_steps=600
        ),
        retrain=TrainConfig(epochs=2, batch_size=1024, lr=2e-3, entropy_weight=0.0),
        baselines=("esmm", "parallel_all_on", "hierarchical_all_on"),
    )
