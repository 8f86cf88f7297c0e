"""The AutoHERI paper's one-shot search as written: the gradient search at the paper's fixed
settings (PaperSearch.gradient(): per-logit Adam from step 0, the entropy at full weight, no
sparsity cost, derive at 0.5), its supernet's edge kernel rows drawn with their own Glorot
fan-in (model.edge_init=block for the supernet only). Settings: method_config.PaperSearch."""

from __future__ import annotations

import dataclasses

from autoheri_jax.config import Config, supernet_config
from autoheri_jax.search.methods.base import SearchMethod
from autoheri_jax.search.methods.gradient import derive_gated


def _supernet(cfg: Config):
    model = dataclasses.replace(cfg.model, edge_init="block")
    return model, supernet_config(cfg.search, arch=cfg.edge_search.gradient())


METHOD = SearchMethod(name="paper", supernet=_supernet, derive=derive_gated)
