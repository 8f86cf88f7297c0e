"""Inference over a dataset: jitted per model, exact over every row (the last batch padded)."""

from __future__ import annotations

import functools

import jax
import numpy as np

from autoheri_jax.data.dataset import CTRDataset, eval_batch_indices
from autoheri_jax.model.losses import stage_probabilities
from autoheri_jax.model.network import forward_outputs
from autoheri_jax.model.spec import ModelSpec, Params


@functools.lru_cache(maxsize=32)  # one compilation per model, not one per evaluation
def make_predict_fn(spec: ModelSpec):
    """Jitted (params, batch) -> (conditional probs, entire-space probs), each B x T."""

    def predict(params: Params, batch: dict):
        logits, extras = forward_outputs(params, spec, batch)
        return stage_probabilities(logits, spec, extras)

    return jax.jit(predict)


def predict_dataset(
    spec: ModelSpec, params: Params, data: CTRDataset, batch_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Exact full pass: [N, T] conditional and entire-space probabilities for every row."""
    predict = make_predict_fn(spec)
    cond, entire = [], []
    for idx, valid in eval_batch_indices(data.num_rows, min(batch_size, data.num_rows)):
        batch = data.batch(idx)
        batch.pop("labels")
        c, e = jax.device_get(predict(params, batch))
        cond.append(c[:valid])
        entire.append(e[:valid])
    return np.concatenate(cond), np.concatenate(entire)
