"""Measurements of one benchmark configuration: the jitted train step, evaluation, data.

Every timing excludes warm-up, ends with `jax.block_until_ready`, and is the median over
repeats of `steps` consecutive calls. Train steps are timed twice: with the batches already on
the device (the step alone) and fed by the real input pipeline (`StepBatchSource` +
`train_iterator`, host gather and transfer included); the pipeline alone is timed too.
"""

from __future__ import annotations

import dataclasses
import math
import os
import resource
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import roofline

from autoheri_jax.config import (
    Config,
    GradientSearch,
    ModelConfig,
    TrainConfig,
    load_config,
    supernet_config,
)
from autoheri_jax.data.dataset import CTRDataset
from autoheri_jax.data.pipeline import StepBatchSource, train_iterator
from autoheri_jax.experiment import load_data
from autoheri_jax.model.build import build_spec
from autoheri_jax.model.network import init_params
from autoheri_jax.model.spec import ModelSpec
from autoheri_jax.model.variants import VARIANTS
from autoheri_jax.train import sparse_embedding as sparse_rows
from autoheri_jax.train.optim import make_optimizer
from autoheri_jax.train.predict import make_predict_fn, predict_dataset
from autoheri_jax.train.step import count_params, init_state, make_grad_fn, make_update_fn

REPO = Path(__file__).resolve().parents[1]
MODELS = ("esmm", "search", "retrain")


def base_config(path: str) -> Config:
    return load_config(REPO / path)


def train_data(cfg: Config, rows: int) -> CTRDataset:
    """`rows` simulated training impressions of the config's world (no valid / test split)."""
    data = dataclasses.replace(cfg.data, num_train=rows, num_valid=0, num_test=1)
    return load_data(dataclasses.replace(cfg, data=data), progress=False).train


def model_for(cfg: Config, name: str) -> tuple[ModelConfig, TrainConfig]:
    """esmm (no edges), search (the config's searched model), retrain (every edge on)."""
    if name == "search":  # the gated supernet (the gradient search's defaults)
        return cfg.model, supernet_config(cfg.search, arch=GradientSearch())
    variant = {"esmm": "esmm", "retrain": "hierarchical_all_on"}[name]
    return VARIANTS[variant](cfg.model), cfg.retrain


def spec_of(model: ModelConfig, data: CTRDataset, searched: bool = False) -> ModelSpec:
    """The spec of `model` on `data`; searched: gated edges, as model_for's "search"."""
    return build_spec(model, data.vocab_sizes, data.num_dense, data.num_stages, searched=searched)


def scale_vocab(data: CTRDataset, total_rows: int, seed: int = 1) -> CTRDataset:
    """The same impressions over a table of `total_rows` rows: field 0 (101, the user id) takes
    whatever the other fields leave, and its ids are hashed uniformly over that range so the
    touched rows spread across the whole table (as a large real vocabulary's would)."""
    rest = sum(data.vocab_sizes[1:])
    v0 = total_rows - rest
    if v0 < 2:
        raise ValueError(f"{total_rows} rows leave nothing for field 0 (others hold {rest})")
    mapping = np.random.default_rng(seed).integers(1, v0, data.vocab_sizes[0]).astype(np.int32)
    mapping[0] = 0  # id 0 stays "unknown"
    sparse = data.sparse.copy()
    sparse[:, 0] = mapping[sparse[:, 0]]
    return dataclasses.replace(data, sparse=sparse, vocab_sizes=(v0, *data.vocab_sizes[1:]))


def unique_rows(spec: ModelSpec, batch: dict) -> int:
    """Distinct table rows one batch looks up (what a sparse step gathers and scatters)."""
    ids = batch["sparse"] + spec.field_offsets[None, : len(spec.vocab_sizes)]
    return len(np.unique(ids))


def _minor_faults() -> int:
    """Minor page faults of this process so far: fresh buffers the allocator had to map."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _cpu_s() -> float:
    """User + system CPU seconds of this process, all threads."""
    t = os.times()
    return t.user + t.system


def _median_run(step, n: int, repeats: int) -> tuple[float, list[float]]:
    """Median seconds per call over `repeats` runs of n calls; step() returns what to block on."""
    times = roofline.repeat_seconds(step, repeats, n)
    return statistics.median(times), times


def bench_train(
    spec: ModelSpec,
    tcfg: TrainConfig,
    data: CTRDataset,
    *,
    steps: int,
    repeats: int,
    warmup: int = 2,
    breakdown: bool = False,
    pipeline: bool = True,
) -> dict:
    b = tcfg.batch_size
    opt = make_optimizer(tcfg)
    t0 = time.perf_counter()
    state = jax.block_until_ready(init_state(spec, tcfg, opt))
    init_s = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    host = [data.batch(rng.integers(0, data.num_rows, b)) for _ in range(4)]
    dev = [jax.device_put(x) for x in host]
    update, first = _compile(make_update_fn(spec, tcfg, opt), state, dev[0])
    t0 = time.perf_counter()
    state, aux = update(state, dev[0])
    jax.block_until_ready((state, aux))
    first["first_run_s"] = time.perf_counter() - t0
    first_s = first["lower_s"] + first["xla_compile_s"] + first["first_run_s"]
    box = {"state": state, "i": 0}

    def step(batch=None):
        box["i"] += 1
        box["state"], _ = update(box["state"], dev[box["i"] % 4] if batch is None else batch)
        return box["state"]

    _median_run(step, warmup, 1)
    faults, cpu0, wall0 = _minor_faults(), _cpu_s(), time.perf_counter()
    step_s, runs = _median_run(step, steps, repeats)
    cpu_per_wall = (_cpu_s() - cpu0) / (time.perf_counter() - wall0)
    faults = (_minor_faults() - faults) / (steps * repeats)
    out = {
        "batch_size": b,
        "steps": steps,
        "repeats": repeats,
        "sparse_embeddings": tcfg.sparse_embeddings,
        "edges": spec.num_edges,
        "params": count_params(jax.eval_shape(lambda: init_params(jax.random.key(0), spec))),
        "table_rows": spec.table_rows,
        "unique_rows_per_batch": float(np.mean([unique_rows(spec, x) for x in host])),
        "unique_row_bound": sparse_rows.unique_row_bound(spec, b),
        "init_s": init_s,
        "first_call_s": first_s,
        "compile_s": max(first_s - step_s, 0.0),
        "first_call_parts_s": {k: v for k, v in first.items() if k != "xla_cost"},
        "device": {
            "step_ms": 1e3 * step_s,
            "best_step_ms": 1e3 * min(runs),  # the least disturbed repeat (shared machines)
            "examples_per_s": b / step_s,
            "best_examples_per_s": b / min(runs),
            "runs_examples_per_s": [b / t for t in runs],
            "minor_page_faults_per_step": faults,
            "cpu_s_per_wall_s": cpu_per_wall,  # < cores in use: other processes took the CPU
        },
        "xla_cost_per_step": first["xla_cost"],
    }
    if pipeline:
        need = warmup + steps * repeats
        source = StepBatchSource(data, b, tcfg.seed, math.ceil(need / (data.num_rows // b)))
        batches = train_iterator(source)
        _median_run(lambda: step(next(batches)), warmup, 1)
        p_s, p_runs = _median_run(lambda: step(next(batches)), steps, repeats)
        out["pipeline"] = {
            "step_ms": 1e3 * p_s,
            "examples_per_s": b / p_s,
            "runs_examples_per_s": [b / t for t in p_runs],
        }
        only = train_iterator(StepBatchSource(data, b, tcfg.seed + 1, source.num_epochs))
        _median_run(lambda: next(only), warmup, 1)
        o_s, _ = _median_run(lambda: next(only), steps, repeats)
        out["pipeline_only_examples_per_s"] = b / o_s
    if breakdown:
        out["breakdown_ms"] = _breakdown(spec, tcfg, box["state"], dev, steps, repeats)
        out["breakdown_ms"]["step"] = 1e3 * step_s
    jax.block_until_ready(box["state"])
    return out


def _compile(jitted, *args) -> tuple:
    """Ahead-of-time lower + compile (timed apart), so XLA's cost analysis comes from the
    optimised HLO the step runs; the compiled executable is what gets timed."""
    t0 = time.perf_counter()
    lowered = jitted.lower(*args)
    t1 = time.perf_counter()
    compiled = lowered.compile()
    t2 = time.perf_counter()
    parts = {"lower_s": t1 - t0, "xla_compile_s": t2 - t1, "xla_cost": roofline.xla_cost(compiled)}
    return compiled, parts


def _breakdown(spec, tcfg, state, dev, steps, repeats) -> dict:
    """ms of the parts of a step, each jitted alone: the unique-row lookup (sparse only) and
    the loss gradient (forward + backward, with the unique lookup and gather when sparse).
    Both take the row scratch donated and hand it back, as the step does (without donation
    XLA would copy the table-sized scratch on every call)."""
    out = {}
    grad_fn = make_grad_fn(spec, tcfg)

    def dense_leaves(*args):  # SparseRows is no pytree: return its values
        aux, grads, scratch = grad_fn(*args)
        leaf = lambda g: g.values if isinstance(g, sparse_rows.SparseRows) else g
        return aux, jax.tree.map(leaf, grads), scratch

    box = {"scratch": jnp.array(state.row_scratch)}
    grad = jax.jit(dense_leaves, donate_argnums=4)

    def run_grad():
        _, grads, box["scratch"] = grad(state.params, dev[0], state.rng, state.step, box["scratch"])
        return grads

    jax.block_until_ready(run_grad())
    out["grad"] = 1e3 * _median_run(run_grad, steps, repeats)[0]
    if tcfg.sparse_embeddings:
        uniq = jax.jit(lambda x, s: sparse_rows.unique_lookup_rows(spec, x, s), donate_argnums=1)

        def run_unique():
            *found, box["scratch"] = uniq(dev[0], box["scratch"])
            return found

        jax.block_until_ready(run_unique())
        out["unique"] = 1e3 * _median_run(run_unique, steps, repeats)[0]
    return out


def bench_eval(spec: ModelSpec, data: CTRDataset, batch_size: int, *, steps: int, repeats: int):
    """The jitted predict step on a device batch, and `predict_dataset` over all of `data`."""
    params = init_params(jax.random.key(0), spec)
    predict = make_predict_fn(spec)
    batch = data.batch(np.arange(batch_size) % data.num_rows)
    batch.pop("labels")
    batch = jax.device_put(batch)
    predict, first = _compile(predict, params, batch)
    t0 = time.perf_counter()
    jax.block_until_ready(predict(params, batch))
    first_s = first["lower_s"] + first["xla_compile_s"] + time.perf_counter() - t0
    _median_run(lambda: predict(params, batch), 2, 1)
    step_s, runs = _median_run(lambda: predict(params, batch), steps, repeats)
    calls = []
    for _ in range(2):  # each call builds its own jitted function (see the report)
        t0 = time.perf_counter()
        predict_dataset(spec, params, data, batch_size)
        calls.append(time.perf_counter() - t0)
    return {
        "batch_size": batch_size,
        "edges": spec.num_edges,
        "first_call_s": first_s,
        "compile_s": max(first_s - step_s, 0.0),
        "xla_cost_per_step": first["xla_cost"],
        "device": {
            "step_ms": 1e3 * step_s,
            "examples_per_s": batch_size / step_s,
            "runs_examples_per_s": [batch_size / t for t in runs],
        },
        "predict_dataset": {
            "rows": data.num_rows,
            "seconds_per_call": calls,
            "examples_per_s": data.num_rows / min(calls),
        },
    }
