"""The README's main job: hierarchical one-shot search on the built-in funnel simulator.

Command:
  autoheri run --config experiments/configs/default.py --workdir runs/default

500k training impressions (CTR ~4%, CVR among clicks ~10%, cascade strength 0.5), 23 Ali-CCP
fields, embed 16, towers 128-64-32; 100k validation impressions (about 400 conversions: at 20k,
about 80, the validated selection's paired margin could not tell architectures a few
thousandths of AUC apart). The default search (edge_search.method=masked): the supernet trains
2 epochs under Bernoulli(0.5) edge masks, each edge is judged by its on/off contrast on
validation (kept above the Bonferroni t threshold), then none / the evidence's edges / all are
retrained and a candidate with more edges is chosen only when it is better at one-sided
p < 0.05 / 2 (DeLong's paired AUC test on validation). Then the derived model, ESMM and the
parallel / hierarchical all-on models each retrain 2 epochs.
Expected: README.md, "What the main job prints and writes" (measured output of this file).
The search's gradient settings below (arch_warmup_steps, entropy_warmup_steps) apply to
`--set edge_search.method=gradient` only.
"""

from autoheri_jax.config import Config, DataConfig, ModelConfig, SearchConfig, TrainConfig


def get_config() -> Config:
    return Config(
        name="default",
        data=DataConfig(
            num_train=500_000, num_valid=100_000, num_test=50_000, cascade_strength=0.5
        ),
        model=ModelConfig(embed_dim=16, hidden=(128, 64, 32), edge_mode="hierarchical"),
        search=SearchConfig(
            epochs=2, batch_size=1024, lr=2e-3, arch_warmup_steps=375, entropy_warmup_steps=600
        ),
        retrain=TrainConfig(epochs=2, batch_size=1024, lr=2e-3),
        baselines=("esmm", "parallel_all_on", "hierarchical_all_on"),
    )
