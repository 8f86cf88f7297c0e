"""Optimisers routed by parameter group with `optax.partition`.

Every leaf is labelled from its path: the top-level key of the params pytree names its
group (`embedding`, `towers`, `arch`), and `GROUP_OF_KEY` maps groups to partitions. Today
embeddings and towers share the `weights` partition; giving embeddings their own optimiser
(row-wise sparse updates) means adding one entry here, not touching the model.

Both partitions are updated jointly in one jitted step, single-level as in the paper: the
edge logits see the same training-loss gradient as the weights, plus the entropy term.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import optax

from autoheri_jax.config import TrainConfig

GROUP_OF_KEY: Mapping[str, str] = {"embedding": "weights", "towers": "weights", "arch": "arch"}


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


def make_optimizer(cfg: TrainConfig) -> optax.GradientTransformation:
    """Weights and arch params in separate partitions, with their own optimiser and rate."""
    partitioned = optax.partition(
        {"weights": _weights_optimizer(cfg), "arch": optax.adam(cfg.arch_lr)}, param_labels
    )
    if cfg.grad_clip > 0:
        return optax.chain(optax.clip_by_global_norm(cfg.grad_clip), partitioned)
    return partitioned
