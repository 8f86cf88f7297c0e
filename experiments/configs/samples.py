"""Pipeline check on the tiny real samples in ../shared/data (any supported format).

Commands (from the repository root; the samples sit beside it):
  autoheri run --config experiments/configs/samples.py --workdir runs/rechub \
      --data ../shared/data/ali-ccp/torch-rechub
  autoheri run --config experiments/configs/samples.py --workdir runs/aitm \
      --data ../shared/data/ali-ccp/paddlerec-aitm --format paddle_aitm --on-bad-row skip
  autoheri run --config experiments/configs/samples.py --workdir runs/esmm \
      --data ../shared/data/ali-ccp/paddlerec-esmm
  autoheri run --config experiments/configs/samples.py --workdir runs/aliexpress \
      --data ../shared/data/aliexpress/torch-rechub

Expected: each finishes in seconds, converts the files into runs/<name>/store and prints a
table for autoheri and esmm (no oracle: real data has no true probabilities). The samples hold
10-100 rows and 1-7 positives per split, so the AUCs are noise (n/a where a split has no
positive); this config checks formats and the pipeline, not model quality.
The gradient search on a sample (a few dozen search steps): `--set edge_search.method=gradient
--set edge_search.arch_warmup_steps=12 --set edge_search.entropy_warmup_steps=18`.
"""

from autoheri_jax.config import Config, DataConfig, ModelConfig, TrainConfig


def get_config() -> Config:
    search = TrainConfig(epochs=3, batch_size=8, lr=5e-3, log_every=2)
    return Config(
        name="samples",
        data=DataConfig(source="files", path="../shared/data/ali-ccp/torch-rechub", min_count=1),
        model=ModelConfig(embed_dim=4, hidden=(8, 4)),
        search=search,
        retrain=TrainConfig(epochs=3, batch_size=8, lr=5e-3, log_every=2),
        baselines=("esmm",),
        eval_batch_size=64,
    )
