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
parallel / hierarchical all-on models each retrain 2 epochs, every training (the search's
supernet, the selection's lanes, the retrains) with early stopping: patience 3 checks of the
validation loss (every 50 steps, first 20k validation rows), best weights kept.

Early stopping, chosen on validation only (data seed 0, train seeds 0; 2026-12-07, this
2-core machine shared, load average 10-12): without it every model's validation loss is
lowest near step 400 and rises through the second epoch (the kept final weights, step 976).
Validation split (100k rows; the checks score its first 20k), loss = entire-space NLL summed
over stages, per setting `--set search.early_stop_patience=P --set retrain.early_stop_patience=P`:

  P       derived   esmm valid loss / ctcvr AUC / cvr AUC   all-on ctcvr AUC   stop   wall
  0 (off) all       0.19249 / 0.6869 / 0.6074              0.7017             976    778 s
  3       none      0.18480 / 0.7148 / 0.6339              0.7140             550    293 s
  6       none      0.18480 / 0.7148 / 0.6339              0.7140             700    288 s

Every model's best check was step 400 under both patiences (so 3 and 6 keep the same
weights; 3 stops sooner). With the best weights the validated selection no longer finds
that the edges help (all - none -0.0008 ctcvr AUC on validation, p 0.60), so the derived
model is ESMM (without early stopping: all, +0.0148). `retrain.early_stop_patience=0`
and `search.early_stop_patience=0` give the previous job.
Expected: README.md, "What the main job prints and writes" (measured output of this file).
The gradient search on this job (its arch warm-up and entropy ramp fitted to the 976-step
search): `--set edge_search.method=gradient --set edge_search.arch_warmup_steps=375
--set edge_search.entropy_warmup_steps=600`.
"""

from autoheri_jax.config import Config, DataConfig, ModelConfig, TrainConfig


def get_config() -> Config:
    return Config(
        name="default",
        data=DataConfig(
            num_train=500_000, num_valid=100_000, num_test=50_000, cascade_strength=0.5
        ),
        model=ModelConfig(embed_dim=16, hidden=(128, 64, 32), edge_mode="hierarchical"),
        search=TrainConfig(epochs=2, batch_size=1024, lr=2e-3, early_stop_patience=3),
        retrain=TrainConfig(epochs=2, batch_size=1024, lr=2e-3, early_stop_patience=3),
        baselines=("esmm", "parallel_all_on", "hierarchical_all_on"),
    )
