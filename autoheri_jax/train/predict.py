"""Inference over a dataset: jitted per model, exact over every row (the last batch padded).

`predict_models` scores several models in one pass over the data: each batch is assembled once
(data/eval_batches.py: consecutive rows, each distinct bag once) and every model's jitted
forward is dispatched on it; the next batch is assembled while the device computes (jax
dispatches asynchronously), and a batch's results are read back only after the next batch has
been dispatched, so the host never waits on the device between batches and nothing but the
[B, T] probabilities comes back. `make_predict_fn` is the forward on a training-layout batch
(bags padded to max_bag_len), for callers that hold one.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import numpy as np

from autoheri_jax import phases
from autoheri_jax.data.dataset import CTRDataset
from autoheri_jax.data.eval_batches import EvalBatches
from autoheri_jax.model.embedding import embed_distinct_bags
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


@functools.lru_cache(maxsize=32)
def make_eval_fn(spec: ModelSpec):
    """Jitted (params, evaluation batch) -> (conditional, entire-space probs), each B x T, on
    data/eval_batches.py's layout (each distinct bag pooled once). One compilation per model
    and batch shape (the bag shapes are bucketed, so a pass meets a few)."""

    def predict(params: Params, batch: dict):
        embedded = embed_distinct_bags(params, spec, batch) if "bags" in batch else None
        logits, extras = forward_outputs(params, spec, batch, embedded=embedded)
        return stage_probabilities(logits, spec, extras)

    return jax.jit(predict)


@phases.timed("evaluate")
def predict_models(
    models: Sequence[tuple[ModelSpec, Params]], data: CTRDataset, batch_size: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Exact full pass of every model over `data`: per model, [N, T] conditional and
    entire-space probabilities for every row. Each batch is assembled once for all models."""
    fns = [make_eval_fn(spec) for spec, _ in models]
    t = data.num_stages
    out = [
        (np.zeros((data.num_rows, t), np.float32), np.zeros((data.num_rows, t), np.float32))
        for _ in models
    ]
    pending = None  # (row offset, valid rows, each model's device results) of the last batch

    def collect(item):
        start, valid, results = item
        for (cond, entire), (c, e) in zip(out, results, strict=True):
            cond[start : start + valid] = np.asarray(c)[:valid]
            entire[start : start + valid] = np.asarray(e)[:valid]

    batches = EvalBatches(data, batch_size)
    for start in range(0, data.num_rows, batches.batch_size):
        batch = batches.batch(start)  # assembled while the device runs the previous batch
        inputs = jax.device_put(batch.inputs)
        results = [fn(params, inputs) for fn, (_, params) in zip(fns, models, strict=True)]
        if pending is not None:
            collect(pending)
        pending = (start, batch.valid, results)
    if pending is not None:
        collect(pending)
    return out


def predict_dataset(
    spec: ModelSpec, params: Params, data: CTRDataset, batch_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Exact full pass: [N, T] conditional and entire-space probabilities for every row."""
    return predict_models([(spec, params)], data, batch_size)[0]
