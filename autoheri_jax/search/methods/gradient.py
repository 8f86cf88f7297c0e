"""The gradient search, this project's variant of the paper's one-shot search: relaxed
Bernoulli gates learned jointly with the weights in their own optax partition (train/optim.py,
with an arch warm-up, the shared-RMS Adam, an entropy ramp and an optional sparsity cost);
the edges whose gate ends above derive_threshold are kept. Settings:
method_config.GradientSearch."""

from __future__ import annotations

from autoheri_jax.config import Config, arch_settings, supernet_config
from autoheri_jax.search import architecture
from autoheri_jax.search.methods.base import Derived, SearchMethod


def _supernet(cfg: Config):
    return cfg.model, supernet_config(cfg.search, arch=arch_settings(cfg.edge_search))


def derive_gated(cfg: Config, wd, spec, params, data) -> Derived:
    """The edges whose gate ends above the method's derive_threshold (gradient, paper)."""
    del wd  # nothing retrained: the gates decide
    record = architecture.searched_architecture(
        params,
        spec,
        arch_settings(cfg.edge_search).derive_threshold,
        data.train.stage_names,
        cfg.model.edge_mode,
        cfg.edge_search.method,
    )
    return record, None


METHOD = SearchMethod(name="gradient", supernet=_supernet, derive=derive_gated)
