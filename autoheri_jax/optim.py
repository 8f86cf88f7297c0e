"""Optimisers routed by parameter group with `optax.partition`.

Every leaf is labelled from its path: the top-level key of the params pytree names its
group, and `GROUP_OF_KEY` maps groups to partitions: `embeddings` (the table; row-sparse
Lazy Adam / Adagrad by default, see sparse_rows.py), `weights` (towers) and `arch` (edge
logits). A new top-level params key needs an entry here; unlabelled parameters are refused.

All partitions are updated jointly in one jitted step, single-level as in the paper: the
edge logits see the same training-loss gradient as the weights, plus the entropy term.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import optax

from autoheri_jax import sparse_rows
from autoheri_jax.config import TrainConfig

GROUP_OF_KEY: Mapping[str, str] = {"embedding": "embeddings", "towers": "weights", "arch": "arch"}


def param_labels(params, group_of_key: Mapping[str, str] = GROUP_OF_KEY):
    """A pytree of partition labels with the structure of `params`."""

    def label(path, _leaf):
        top = getattr(path[0], "key", None)
        if top not in group_of_key:
            raise KeyError(f"parameter {jax.tree_util.keystr(path)} has no optimiser group")
        return group_of_key[top]

    return jax.tree_util.tree_map_with_path(label, params)


def _weights_optimizer(cfg: TrainConfig) -> optax.GradientTransformation:
    if cfg.optimizer == "adam":
        return optax.adam(cfg.lr)
    if cfg.optimizer == "adamw":
        return optax.adamw(cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return optax.sgd(cfg.lr, momentum=0.9)
    if cfg.optimizer == "adagrad":
        return optax.adagrad(cfg.lr)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}")


def _embeddings_optimizer(cfg: TrainConfig) -> optax.GradientTransformation:
    lr = cfg.embedding_lr or cfg.lr
    if cfg.sparse_embeddings:
        if cfg.embedding_optimizer == "adam":
            return sparse_rows.lazy_adam(lr)
        return sparse_rows.rowwise_adagrad(lr)
    return optax.adam(lr) if cfg.embedding_optimizer == "adam" else optax.adagrad(lr)


def make_optimizer(cfg: TrainConfig) -> optax.GradientTransformation:
    """Embeddings, weights and arch params in separate partitions, each with its own rule."""
    partitioned = optax.partition(
        {
            "embeddings": _embeddings_optimizer(cfg),
            "weights": _weights_optimizer(cfg),
            "arch": optax.adam(cfg.arch_lr),
        },
        param_labels,
    )
    if cfg.grad_clip > 0:
        return optax.chain(sparse_rows.clip_by_global_norm(cfg.grad_clip), partitioned)
    return partitioned
