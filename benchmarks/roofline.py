"""Roofline pieces for the benchmark suite: work per example and this machine's rates.

Work per example is counted from a `ModelSpec` (float32 throughout):

  FLOPs   tower matmuls 2 * in * out per layer forward (edge blocks included, the head too),
          x3 for forward + backward (dX and dW); bag pooling 2 * L * D per bag field (the
          simulator has none); the backward segment-sum of the lookups' gradients (F * D adds);
          Adam at ~12 FLOPs per parameter it touches, amortised over the batch.
  bytes   a floor on memory traffic, each tensor moved once per pass: the batch's inputs; the
          looked-up embeddings (gather write, matmul read, gradient write, scatter read); tower
          activations (forward write/read, backward ~1 more pass); per step, amortised over
          the batch: the embedding table's touched rows (sparse: table read + read/write on
          the scatter-add, both moments read + written: 7 row passes over U unique rows) or
          the whole table (dense: gradient zero-fill + scatter, then Adam reads table,
          gradient, both moments and writes table and moments: 8 passes over V rows), and
          the tower parameters (~10 passes: forward, backward, gradient, Adam).

The machine side is measured: a jitted float32 matmul at the towers' shapes and a large square
one (the peak), a jitted elementwise pass and a numpy copy over a large array (streaming
bandwidth, read + write counted), and a jitted random-row gather from a large [V, D] table.

A second, tighter floor per train config (`step_matmul_seconds`): the step's own tower matmuls
(forward, input gradient, weight gradient of every layer at the step's batch) jitted together
and timed alone. Peak FLOP/s assumes every matmul runs like a large square one; the towers'
thin shapes (2048 x 64 x 32, ...) do not, so this is what the arithmetic of the step costs on
this machine's matmul library before any embedding, optimiser or elementwise work.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

F32 = 4
ADAM_FLOPS = 12  # per parameter per step: two moment updates, bias correction, sqrt, divide
TABLE_PASSES_SPARSE = 7  # touched-row passes of the table and both moments per step
TABLE_PASSES_DENSE = 8  # whole-table passes per step (gradient fill + Adam)
TOWER_PASSES = 10  # tower parameter passes per step


def layer_shapes(spec) -> list[tuple[int, int]]:
    """(in, out) of every matmul of the towers, heads included."""
    shapes = []
    for t in range(spec.num_tasks):
        for j, width in enumerate(spec.model.hidden):
            shapes.append((sum(spec.layer_input_dims(t, j)), width))
        shapes.append((spec.model.hidden[-1], 1))
    return shapes


def tower_params(spec) -> int:
    return sum(k * n + n for k, n in layer_shapes(spec)) + (spec.num_edges if spec.has_arch else 0)


def flops_per_example(
    spec, batch_size: int, touched_rows: int, sparse: bool, train: bool = True, bag_len: int = 0
) -> dict:
    fwd = sum(2 * k * n for k, n in layer_shapes(spec))
    pooling = 2 * len(spec.bag_vocab_sizes) * bag_len * spec.model.embed_dim
    if not train:
        return {"towers": fwd, "pooling": pooling, "total": fwd + pooling}
    scatter = spec.num_fields * spec.model.embed_dim
    rows = touched_rows if sparse else spec.table_rows
    optimizer = ADAM_FLOPS * (tower_params(spec) + rows * spec.model.embed_dim) / batch_size
    return {
        "towers": 3 * fwd,
        "pooling": 3 * pooling + scatter,
        "optimizer": optimizer,
        "total": 3 * fwd + 3 * pooling + scatter + optimizer,
    }


def bytes_per_example(
    spec, batch_size: int, touched_rows: int, sparse: bool, train: bool = True
) -> dict:
    row = spec.model.embed_dim * F32
    inputs = (len(spec.vocab_sizes) + spec.num_dense + spec.num_tasks) * F32
    acts = sum((k + n) * F32 for k, n in layer_shapes(spec))
    if not train:
        embedded = 2 * spec.num_fields * row  # gather read + write
        parts = {"inputs": inputs, "embeddings": embedded, "activations": 2 * acts}
        return {**parts, "total": sum(parts.values())}
    embedded = 4 * spec.num_fields * row
    if sparse:
        table = TABLE_PASSES_SPARSE * touched_rows * row / batch_size
    else:
        table = TABLE_PASSES_DENSE * spec.table_rows * row / batch_size
    towers = TOWER_PASSES * tower_params(spec) * F32 / batch_size
    parts = {
        "inputs": inputs,
        "embeddings": embedded,
        "activations": 3 * acts,
        "table": table,
        "tower_params": towers,
    }
    return {**parts, "total": sum(parts.values())}


def xla_cost(compiled) -> dict:
    """XLA's estimate for one call of a compiled executable (the optimised HLO: the lowered,
    unoptimised one counts the cumulative sums inside `jnp.unique` as quadratic)."""
    try:
        cost = compiled.cost_analysis()
    except Exception as e:  # cost analysis is best-effort across backends and versions
        return {"error": f"{type(e).__name__}: {e}"}
    if isinstance(cost, list | tuple):
        cost = cost[0] if cost else {}
    return {k: float(cost[k]) for k in ("flops", "bytes accessed") if k in (cost or {})}


def repeat_seconds(fn: Callable[[], object], repeats: int, inner: int = 1) -> list[float]:
    """Seconds per call of each of `repeats` runs of `inner` calls (blocked at each run's end)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner - 1):
            fn()
        jax.block_until_ready(fn())
        times.append((time.perf_counter() - t0) / inner)
    return times


def best_seconds(fn: Callable[[], object], repeats: int, inner: int = 1) -> float:
    """Best (min) wall time of `inner` calls of fn (blocked at the end), after a warm-up call:
    a machine rate is what the hardware can do, so the least disturbed repeat is kept."""
    jax.block_until_ready(fn())
    return min(repeat_seconds(fn, repeats, inner))


def matmul_rate(m: int, k: int, n: int, repeats: int) -> float:
    a = jnp.ones((m, k), jnp.float32)
    b = jnp.ones((k, n), jnp.float32) / k
    f = jax.jit(jnp.matmul)
    inner = max(1, int(2e8 // (2 * m * k * n)))  # ~0.2 GFLOP per timing
    return 2 * m * k * n / best_seconds(lambda: f(a, b), repeats, inner)


def step_matmul_seconds(spec, batch_size: int, repeats: int) -> float:
    """Best time of one train step's tower matmuls alone (see the module docstring)."""
    shapes = layer_shapes(spec)
    xs = [jnp.ones((batch_size, k), jnp.float32) for k, _ in shapes]
    ws = [jnp.ones((k, n), jnp.float32) / k for k, n in shapes]
    dzs = [jnp.ones((batch_size, n), jnp.float32) for _, n in shapes]

    @jax.jit
    def matmuls(xs, ws, dzs):
        return [(x @ w, dz @ w.T, x.T @ dz) for x, w, dz in zip(xs, ws, dzs, strict=True)]

    return best_seconds(lambda: matmuls(xs, ws, dzs), repeats, inner=5)


def _jax_stream(nbytes: int, repeats: int) -> tuple[dict, float]:
    """Bytes/s of a jitted elementwise pass (read + write) over nbytes: in place (input
    donated, as the train step donates its state) and into a freshly allocated output; and the
    MB of pages the fresh output faulted in per call."""
    x = jnp.ones((nbytes // F32,), jnp.float32)
    add = jax.jit(lambda v: v + 1.0)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    fresh = 2 * nbytes / best_seconds(lambda: add(x), repeats)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    page_mb = faults * resource.getpagesize() / (repeats + 1) / 2**20
    add_in_place = jax.jit(lambda v: v + 1.0, donate_argnums=0)
    box = [add_in_place(x)]

    def step():
        box[0] = add_in_place(box[0])
        return box[0]

    in_place = 2 * nbytes / best_seconds(step, repeats)
    return {"jax_in_place": in_place, "jax_fresh_output": fresh}, page_mb


def _numpy_stream(nbytes: int, repeats: int) -> float:
    """Bytes/s of a numpy copy (read + write) of nbytes."""
    src = np.ones(nbytes // F32, np.float32)
    dst = np.empty_like(src)
    return 2 * nbytes / best_seconds(lambda: np.copyto(dst, src), repeats)


def measure_machine(
    spec,
    *,
    batch_size: int,
    square: int,
    stream_bytes: int,
    gather_table_rows: int,
    gather_rows: int,
    repeats: int,
) -> dict:
    """Matmul rates (tower shapes and a square peak), streaming and random-gather bandwidth."""
    towers = {}
    for k, n in sorted(set(layer_shapes(spec))):
        towers[f"{batch_size}x{k}x{n}"] = matmul_rate(batch_size, k, n, repeats)
    peak = matmul_rate(square, square, square, repeats)

    stream, faulted_mb = _jax_stream(stream_bytes, repeats)
    stream["numpy_copy"] = _numpy_stream(stream_bytes, repeats)

    d = spec.model.embed_dim
    table = jnp.ones((gather_table_rows, d), jnp.float32)
    idx = jnp.asarray(np.random.default_rng(0).integers(0, gather_table_rows, gather_rows))
    take = jax.jit(lambda t, i: jnp.take(t, i, axis=0))
    gather_s = best_seconds(lambda: take(table, idx), repeats)
    return {
        "matmul_flops_per_s": {"towers": towers, f"square_{square}": peak},
        "peak_flops_per_s": max(peak, *towers.values()),
        "tower_matmul_flops_per_s": min(towers.values()),
        "bandwidth_bytes_per_s": stream,
        "stream_bytes": stream_bytes,
        "fresh_output_page_faulted_mb_per_call": faulted_mb,
        "peak_bandwidth_bytes_per_s": max(stream.values()),
        "gather": {
            "table_rows": gather_table_rows,
            "rows": gather_rows,
            "rows_per_s": gather_rows / gather_s,
            "bytes_per_s": 2 * gather_rows * d * F32 / gather_s,
        },
    }


def bound(
    flops: float, nbytes: float, machine: dict, measured: float, matmul_floor: float | None = None
) -> dict:
    """Attainable examples/s = min(compute bound, bandwidth bound); measured as a fraction.
    `matmul_floor`: examples/s of the step's matmuls alone (step_matmul_seconds), if known."""
    compute = machine["peak_flops_per_s"] / flops
    memory = machine["peak_bandwidth_bytes_per_s"] / nbytes
    attainable = min(compute, memory)
    floor = {}
    if matmul_floor:
        floor = {
            "matmul_floor_examples_per_s": matmul_floor,
            "fraction_of_matmul_floor": measured / matmul_floor,
        }
    return {
        **floor,
        "flops_per_example": flops,
        "bytes_per_example": nbytes,
        "intensity_flops_per_byte": flops / nbytes,
        "compute_bound_examples_per_s": compute,
        "tower_shape_compute_bound_examples_per_s": machine["tower_matmul_flops_per_s"] / flops,
        "bandwidth_bound_examples_per_s": memory,
        "attainable_examples_per_s": attainable,
        "limited_by": "compute" if compute <= memory else "bandwidth",
        "measured_examples_per_s": measured,
        "fraction_of_attainable": measured / attainable,
    }
