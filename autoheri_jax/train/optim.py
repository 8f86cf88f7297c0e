"""Optimisers routed by parameter group with `optax.partition`.

Every leaf is labelled from its path: the top-level key of the params pytree names its
group, and `GROUP_OF_KEY` maps groups to partitions: `embeddings` (the table; row-sparse
Lazy Adam / Adagrad by default, see sparse_embedding.py), `weights` (towers) and `arch` (edge
logits). A new top-level params key needs an entry here; unlabelled parameters are refused.

All partitions are updated jointly in one jitted step, single-level as in the paper: the
edge logits see the same training-loss gradient as the weights, plus the entropy term (and the
optional sparsity cost). The arch partition's rule is wrapped in `delayed` (optax's
`conditionally_mask`), which holds the logits and the rule's state still for
`arch_warmup_steps`, and is by default `scale_by_shared_rms` (Adam with one second moment for
all logits), so a logit's step keeps its share of the evidence; see docs/design.md, "How the
search decides".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import traverse_util

from autoheri_jax.config import TrainConfig, arch_of
from autoheri_jax.train import sparse_embedding

GROUP_OF_KEY: Mapping[str, str] = {"embedding": "embeddings", "towers": "weights", "arch": "arch"}


def param_labels(params, group_of_key: Mapping[str, str] = GROUP_OF_KEY):
    """A pytree of partition labels with the structure of `params` (a nested dict), by the
    top-level key of each leaf's path (flax's path-aware map over the params dict): "embeddings",
    "weights" or "arch" by default; KeyError for a top-level key `group_of_key` lacks."""

    def label(path: tuple[str, ...], _leaf):
        if path[0] not in group_of_key:
            raise KeyError(f"parameter {'/'.join(path)} has no optimiser group")
        return group_of_key[path[0]]

    return traverse_util.path_aware_map(label, params)


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
            return sparse_embedding.lazy_adam(lr)
        return sparse_embedding.rowwise_adagrad(lr)
    return optax.adam(lr) if cfg.embedding_optimizer == "adam" else optax.adagrad(lr)


def delayed(inner: optax.GradientTransformation, start: int) -> optax.GradientTransformation:
    """`inner` from update `start` on: before it, zero updates and `inner`'s state does not
    advance (`optax.transforms.conditionally_mask`), so the parameters stay bitwise where they
    were and the rule starts afresh (Adam's moments and bias correction begin at the first real
    step). `start` 0 wraps too, so the state's structure (and a checkpoint's) does not depend on
    the warm-up's length."""
    return optax.transforms.conditionally_mask(inner, lambda count: count >= start)


class SharedRmsState(NamedTuple):
    """State of `scale_by_shared_rms`."""

    count: jax.Array  # int32 scalar
    mu: optax.Updates  # first moment, per parameter
    nu: jax.Array  # float32 scalar: second moment of the whole partition's gradient


def scale_by_shared_rms(
    b1: float = 0.9, b2: float = 0.999, eps: float = 1e-12
) -> optax.GradientTransformation:
    """Adam with one second moment for the whole partition: mu_k / sqrt(mean_k nu).

    Per-parameter Adam divides each edge's gradient by its own size, so an edge with a
    gradient of 1e-7 moves as fast as one with 1e-3 and the sign of noise decides. Sharing
    the normaliser keeps the step scale-free (no learning rate to retune per dataset) while an
    edge with twice the evidence moves twice as far.
    """

    def init_fn(params):
        mu = jax.tree.map(jnp.zeros_like, params)
        return SharedRmsState(jnp.zeros((), jnp.int32), mu, jnp.zeros((), jnp.float32))

    def update_fn(updates, state, params=None):
        del params
        leaves = jax.tree.leaves(updates)
        size = sum(x.size for x in leaves)
        square = sum(jnp.sum(jnp.square(x)) for x in leaves) / max(size, 1)
        mu = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, state.mu, updates)
        nu = b2 * state.nu + (1 - b2) * square
        count = state.count + 1
        mu_hat_scale = 1 / (1 - b1 ** count.astype(jnp.float32))
        nu_hat = nu / (1 - b2 ** count.astype(jnp.float32))
        denom = jnp.sqrt(nu_hat) + eps
        out = jax.tree.map(lambda m: m * mu_hat_scale / denom, mu)
        return out, SharedRmsState(count, mu, nu)

    return optax.GradientTransformation(init_fn, update_fn)


def _arch_optimizer(cfg: TrainConfig) -> optax.GradientTransformation:
    arch = arch_of(cfg)  # the gated search's method config (GradientSearch)
    if arch is None:  # no arch params to move (train/step.init_state)
        return optax.set_to_zero()
    if arch.arch_optimizer == "sgd":
        rule = optax.sgd(arch.arch_lr, momentum=0.9)
    elif arch.arch_optimizer == "shared_adam":
        rule = optax.chain(scale_by_shared_rms(), optax.scale(-arch.arch_lr))
    else:
        rule = optax.adam(arch.arch_lr)
    return delayed(rule, arch.arch_warmup_steps)


def make_optimizer(cfg: TrainConfig) -> optax.GradientTransformation:
    """The run's optimizer: embeddings, weights and arch params (`param_labels`) in separate
    partitions, each with its own rule, after a global-norm clip when cfg.grad_clip > 0."""
    partitioned = optax.partition(
        {
            "embeddings": _embeddings_optimizer(cfg),
            "weights": _weights_optimizer(cfg),
            "arch": _arch_optimizer(cfg),
        },
        param_labels,
    )
    if cfg.grad_clip > 0:
        return optax.chain(sparse_embedding.clip_by_global_norm(cfg.grad_clip), partitioned)
    return partitioned
