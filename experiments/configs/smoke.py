"""Seconds-long end-to-end run used by the tests (and a quick check that an install works).

Command:
  autoheri run --config experiments/configs/smoke.py --workdir runs/smoke

4k training impressions, embed 4, towers 16-8; one epoch each of search and retrain.
Expected: finishes in well under a minute on 2 CPU cores and prints a table with autoheri,
esmm, hierarchical_all_on and the oracle. The scores mean nothing at this size.
The gradient search at this size (16 search steps: the arch params wait 6, the entropy ramps
in over 8): `--set edge_search.method=gradient --set edge_search.arch_warmup_steps=6
--set edge_search.entropy_warmup_steps=8` (GRADIENT below).
"""

from autoheri_jax.config import (
    CheckpointConfig,
    Config,
    DataConfig,
    ModelConfig,
    TrainConfig,
)

# `--set` overrides: this config searched by the gradient search, its schedule fitted to the
# 16 search steps
GRADIENT = (
    "edge_search.method=gradient",
    "edge_search.arch_warmup_steps=6",
    "edge_search.entropy_warmup_steps=8",
)


def get_config() -> Config:
    search = TrainConfig(epochs=1, batch_size=256, lr=5e-3, log_every=5)
    return Config(
        name="smoke",
        data=DataConfig(
            num_train=4096,
            num_valid=512,
            num_test=2048,
            num_users=500,
            num_items=1000,
            click_rate=0.1,
            stage_rates=(0.3,),
        ),
        model=ModelConfig(embed_dim=4, hidden=(16, 8)),
        search=search,
        retrain=TrainConfig(epochs=1, batch_size=256, lr=5e-3, log_every=5),
        baselines=("esmm", "hierarchical_all_on"),
        eval_batch_size=1024,
        checkpoint=CheckpointConfig(every_steps=4, keep=2, valid_rows=512),
    )
