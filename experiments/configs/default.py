"""The README's main job: hierarchical one-shot search on the built-in funnel simulator.

Command:
  autoheri run --config experiments/configs/default.py --workdir runs/default

500k training impressions (CTR ~4%, CVR among clicks ~10%, cascade strength 0.5), 23 Ali-CCP
fields, embed 16, towers 128-64-32; search 2 epochs (976 steps: weights alone for the first
375, entropy ramped in over the next 600), then the derived model, ESMM and the parallel /
hierarchical all-on models each retrain 2 epochs.
Expected (measured 2026-12-02 on 2 CPU cores: 43 s wall, seed 0): the search keeps 0 of 9
edges, so autoheri equals ESMM; test AUC ctr / cvr / ctcvr: autoheri and esmm 0.673 / 0.611 /
0.672, hierarchical_all_on 0.675 / 0.601 / 0.676, oracle 0.801 / 0.796 / 0.896; soft CVR AUC
(against the true probabilities) esmm 0.602, hierarchical_all_on 0.613. The 3-seed spread and
the paper-recipe control: experiments/studies/default_seeds.py and default_paper_recipe.py.
"""

from autoheri_jax.config import Config, DataConfig, ModelConfig, SearchConfig, TrainConfig


def get_config() -> Config:
    return Config(
        name="default",
        data=DataConfig(num_train=500_000, num_valid=20_000, num_test=50_000, cascade_strength=0.5),
        model=ModelConfig(embed_dim=16, hidden=(128, 64, 32), edge_mode="hierarchical"),
        search=SearchConfig(
            epochs=2, batch_size=1024, lr=2e-3, arch_warmup_steps=375, entropy_warmup_steps=600
        ),
        retrain=TrainConfig(epochs=2, batch_size=1024, lr=2e-3),
        baselines=("esmm", "parallel_all_on", "hierarchical_all_on"),
    )
