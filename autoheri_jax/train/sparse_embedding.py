"""Row-sparse embedding updates: a step touches only the rows its batch looked up.

A dense optimiser over a [V, D] table reads and writes every row (and each moment) every step,
so step time grows with the vocabulary. Here the step gathers the batch's distinct rows
(`dedupe`: O(lookups), no sort; padded with the out-of-range sentinel V to a static bound U
from the fields' vocabulary sizes, `unique_row_bound`), differentiates
the loss with respect to those U x D rows (autodiff of the gather already segment-sums the
gradient of repeated ids), and the optimiser scatters updates back into those rows only.

`SparseRows` carries such a gradient (and the update made from it) through `optax.partition`
as a single opaque leaf, so the table keeps its place in the params pytree and the embedding
group is an ordinary third partition (`embeddings`) beside `weights` and `arch`:

  rowwise_adagrad  optax.adagrad restricted to touched rows. Adagrad leaves untouched rows
                   unchanged anyway, so it equals dense optax.adagrad (up to the summation
                   order of repeated ids' gradients).
  lazy_adam        Adam whose moments change only on touched rows (as in TF's LazyAdam and
                   production recommenders). Bias correction uses the global step. It differs
                   from dense Adam by design: dense Adam keeps moving rows whose moments are
                   non-zero even when the batch did not look them up.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.sharding import PartitionSpec as P

from autoheri_jax.model.embedding import CompactBags, bag_weights, embed_from, lookup_rows
from autoheri_jax.model.spec import ModelSpec, Params
from autoheri_jax.train.collectives import all_gather, device_index, num_devices, pmean


@dataclasses.dataclass(frozen=True)
class SparseRows:
    """Values for rows `ids` of a [V, D] table; ids equal to V are padding (dropped).

    Deliberately not a registered pytree: optax's tree maps treat it as one leaf.
    """

    ids: jax.Array  # int32 [U]
    values: jax.Array  # [U, D]


SCRATCH_EMPTY = jnp.iinfo(jnp.int32).max  # every scratch entry holds this between steps


def new_scratch(table_rows: int) -> jax.Array:
    """The dedupe scratch of a [table_rows, D] table: int32 [table_rows], all SCRATCH_EMPTY."""
    return jnp.full((table_rows,), SCRATCH_EMPTY, jnp.int32)


def unique_row_bound(spec: ModelSpec, batch_size: int, bag_len: int = 0) -> int:
    """Most distinct rows a batch can touch: field f owns v_f rows and makes B (or B x L) of
    the lookups, so sum_f min(lookups_f, v_f). Exact and static, and far below B x F when
    fields are small (the default model: 18,378 against 47,104 at batch 2048)."""
    single = sum(min(batch_size, v) for v in spec.vocab_sizes)
    return single + sum(min(batch_size * bag_len, v) for v in spec.bag_vocab_sizes)


def _whole_on_every_device(x: jax.Array) -> jax.Array:
    """`x`, constrained to be replicated when traced under a mesh whose axes XLA's partitioner
    places (the mesh launcher's jit, parallel.py); `x` unchanged otherwise (one device, pmap,
    shard_map, vmapped lanes)."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or mesh.manual_axes:
        return x
    return jax.lax.with_sharding_constraint(x, P())


def dedupe(
    ids: jax.Array, scratch: jax.Array, bound: int
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Distinct values of `ids` in O(len(ids)), without a sort.

    ids: int32 [N] in [0, V]; V (= len(scratch)) is the padding sentinel. scratch: int32 [V],
    all SCRATCH_EMPTY (see `new_scratch`), donated by the caller. bound: a static upper bound
    on the number of distinct non-sentinel ids.

    Returns (rows int32 [bound + 1]: the distinct ids in order of first occurrence, then V;
    the last slot always holds V, so sentinel entries have a row that gathers zeros and whose
    scatters are dropped; inverse int32 [N] with rows[inverse] == ids; the number of distinct
    ids; the scratch, all SCRATCH_EMPTY again).

    Each id's first position is found by a scatter-min of positions into the scratch at the
    ids' rows and a gather back, so the work is a few passes over N whatever V is, where a
    sort (`jnp.unique`) costs O(N log N).
    The scratch is reset on the way out, so it is the same constant at every step boundary
    (on every device) and the result never depends on it.
    """
    n = ids.shape[0]
    # Under the mesh launcher's jit the batch is split across devices. From split ids the
    # scatter into the replicated scratch would become per-device scatters plus an all-reduce
    # of the whole [V] scratch: O(vocabulary) traffic per step. Whole ids cost an all-gather
    # of the lookups instead, and every device then dedupes the global batch, as Single does.
    ids = _whole_on_every_device(ids)
    pos = _whole_on_every_device(jnp.arange(n, dtype=jnp.int32))
    scratch = scratch.at[ids].min(pos, mode="drop")
    first_pos = _whole_on_every_device(scratch.at[ids].get(mode="fill", fill_value=SCRATCH_EMPTY))
    # The reset's values are computed from the gather (x | INT32_MAX is INT32_MAX for any
    # x >= 0), so XLA orders the gather before the in-place scatter; with constant values it
    # copies the whole scratch instead (O(vocabulary) per step).
    scratch = scratch.at[ids].set(first_pos | SCRATCH_EMPTY, mode="drop")
    is_first = first_pos == pos  # false for sentinels (their gather reads SCRATCH_EMPTY)
    slot = jnp.cumsum(is_first.astype(jnp.int32)) - 1  # slot of each first occurrence
    inverse = slot.at[first_pos].get(mode="fill", fill_value=bound)  # sentinels -> last slot
    vocab = scratch.shape[0]
    rows = jnp.full((bound + 1,), vocab, jnp.int32)
    # `bound` holds for ids inside their fields' ranges (lookup_rows clamps them there); the
    # guard keeps the sentinel slot intact even if a caller's bound were too small.
    rows = rows.at[jnp.where(is_first & (slot < bound), slot, bound + 1)].set(ids, mode="drop")
    return rows, inverse.astype(jnp.int32), jnp.sum(is_first), scratch


def bag_slots(batch: dict, fraction: float) -> int:
    """Static number of slots for a batch's real bag entries: `fraction` of its padded
    B x Fb x L entries, rounded up to a multiple of 8; 0 (use the padded layout) when the
    batch has no bags or the slots would hold them all anyway."""
    if fraction <= 0 or "bag_mask" not in batch:
        return 0
    padded = math.prod(batch["bag_mask"].shape)
    slots = -(-math.ceil(fraction * padded) // 8) * 8
    return slots if slots < padded else 0


def compact_bags(spec: ModelSpec, inputs: dict, bags: jax.Array, slots: int):
    """The real entries of `bags` [B, Fb, L] in their (row, field, position) order, in `slots`
    slots: O(B x Fb x L) integer work once, then everything downstream is O(slots).

    Assumes what `bags_fit` checks: every bag's real entries are a prefix of its L positions
    (as CTRDataset.batch writes them) and there are at most `slots` of them. Returns (table rows
    int32 [slots], the sentinel `spec.table_rows` in unused slots; `CompactBags` whose index is
    those rows for now).
    """
    mask = inputs["bag_mask"] > 0
    b, fb, length = mask.shape
    count = jnp.sum(mask, axis=-1, dtype=jnp.int32).reshape(-1)  # real entries per bag
    start = (jnp.cumsum(count) - count).reshape(b, fb, 1)  # first slot of each bag
    lane = jnp.arange(length, dtype=jnp.int32)
    dest = jnp.where(mask, start + lane, slots).reshape(-1)  # padding -> dropped
    n = mask.size
    src = jnp.full((slots,), n, jnp.int32).at[dest].set(jnp.arange(n, dtype=jnp.int32), mode="drop")
    used = src < n
    ids = bags.reshape(-1).at[src].get(mode="fill", fill_value=0)
    rows = jnp.where(used, ids, spec.table_rows)
    weight = (
        jnp.asarray(bag_weights(spec, inputs)).reshape(-1).at[src].get(mode="fill", fill_value=0)
    )
    segment = jnp.where(used, src // length, b * fb)
    return rows, CompactBags(rows, segment, weight)


def bags_fit(batch: dict, slots: int) -> jax.Array:
    """Whether `compact_bags` holds the batch exactly: each bag's real entries (mask > 0) are a
    prefix of its positions, and there are at most `slots` of them in all."""
    mask = batch["bag_mask"] > 0
    prefix = jnp.all(mask[..., 1:] <= mask[..., :-1])
    return prefix & (jnp.sum(mask, dtype=jnp.int32) <= slots)


def unique_lookup_rows(
    spec: ModelSpec, inputs: dict, scratch: jax.Array, slots: int = 0
) -> tuple[jax.Array, jax.Array, jax.Array | CompactBags | None, jax.Array, jax.Array]:
    """The batch's distinct table rows (`dedupe` over every lookup, padded with the sentinel
    `table_rows` to `unique_row_bound` + 1).

    Returns (rows int32 [U + 1], index of each single-field lookup into rows [B, F], index of
    each bag entry [B, Fb, L] or None, number of distinct rows, the scratch). Masked bag
    entries point at the sentinel slot, so they are never "touched". With `slots` > 0 the bag
    entries are the real ones alone (`compact_bags`; the batch must hold at most `slots`):
    a `CompactBags` whose index points into rows.
    """
    single, bags = lookup_rows(spec, inputs)
    vocab = spec.table_rows  # out of range: gathers read 0, scatters drop it
    flat = [single.reshape(-1)]
    bag_len = 0
    compact = None
    if bags is not None:
        bag_len = bags.shape[-1]
        if slots:
            bag_rows, compact = compact_bags(spec, inputs, bags, slots)
            flat.append(bag_rows)
        else:
            flat.append(jnp.where(inputs["bag_mask"] > 0, bags, vocab).reshape(-1))
    bound = unique_row_bound(spec, single.shape[0], bag_len)
    n_single = single.size
    if bags is not None and _direct_bags(spec, single.shape[0], bag_len):
        rows, inverse, n, scratch = _direct_bag_rows(
            spec, single.reshape(-1), flat[1], scratch, bound
        )
    else:
        rows, inverse, n, scratch = dedupe(jnp.concatenate(flat), scratch, bound)
    single_idx = inverse[:n_single].reshape(single.shape)
    if bags is None:
        bag_idx = None
    elif compact is not None:
        bag_idx = compact._replace(index=inverse[n_single:])
    else:
        bag_idx = inverse[n_single:].reshape(bags.shape)
    return rows, single_idx, bag_idx, n, scratch


def _direct_bags(spec: ModelSpec, batch_size: int, bag_len: int) -> bool:
    """Whether every bag field's bound is its whole vocabulary (v <= B x L), so its rows can be
    numbered by a touched mask over the field instead of deduplicated entry by entry."""
    return all(v <= batch_size * bag_len for v in spec.bag_vocab_sizes)


def _direct_bag_rows(spec: ModelSpec, single: jax.Array, bag: jax.Array, scratch, bound: int):
    """`dedupe` of [single, bag] (bag: table rows, the sentinel for padding) when
    `_direct_bags` holds: the singles are deduplicated; the bag fields' rows (contiguous at
    the table's end, sum of their vocabularies V_b) are marked touched, numbered by a cumsum
    over those V_b rows and placed after the singles' distinct rows, in row order. Costs two
    passes over the bag entries (mark, look up) instead of dedupe's seven, plus O(V_b), which
    the bound already pays. Same contract as dedupe, except the bag rows' order (row order,
    not first occurrence), which changes no sum: each row's gradient adds its entries in
    entry order either way."""
    num_single = len(spec.vocab_sizes)
    single_bound = sum(min(len(single) // num_single, v) for v in spec.vocab_sizes)
    rows_s, inv_s, n_s, scratch = dedupe(single, scratch, single_bound)
    base = int(spec.field_offsets[num_single])
    width = sum(spec.bag_vocab_sizes)
    local = jnp.where(bag < spec.table_rows, bag - base, width)  # sentinel -> width
    touched = jnp.zeros((width,), jnp.int32).at[local].set(1, mode="drop")
    slot = jnp.cumsum(touched) - 1
    n_b = jnp.sum(touched)
    rows = (
        jnp.full((bound + 1,), spec.table_rows, jnp.int32)
        .at[:single_bound]
        .set(rows_s[:single_bound])
    )
    dest = jnp.where(touched > 0, n_s + slot, bound + 1)
    rows = rows.at[dest].set(base + jnp.arange(width, dtype=jnp.int32), mode="drop")
    inv_b = jnp.where(local < width, n_s + slot.at[local].get(mode="fill", fill_value=0), bound)
    return rows, jnp.concatenate([inv_s, inv_b.astype(jnp.int32)]), n_s + n_b, scratch


def gather_rows(table: jax.Array, rows: jax.Array) -> jax.Array:
    """table[rows] ([V, D] table, int32 [U] rows -> [U, D]); an out-of-range row (the
    sentinel V) reads zeros."""
    return table.at[rows].get(mode="fill", fill_value=0)


# ------------------------------------------------------- the row gradient, across devices


def _to_local(ids: jax.Array, axis: str, shard: int) -> jax.Array:
    """Global table rows -> rows of this device's shard; rows it does not own -> `shard`
    (out of range: gathers read 0, scatters drop them)."""
    local = ids - device_index(axis) * shard
    return jnp.where((local >= 0) & (local < shard), local, shard)


def _fetch_rows(table: jax.Array, rows: jax.Array, all_rows, axis: str | None, sharded: bool):
    """[U, D] values of global rows `rows`: local gather, or assembled from their owners
    (`all_rows`: every device's rows, [n * U])."""
    if not sharded:
        return gather_rows(table, rows)
    mine = _to_local(all_rows, axis, table.shape[0])
    held = jax.lax.psum(gather_rows(table, mine), axis)  # each row from its owner
    me = device_index(axis)
    return jax.lax.dynamic_slice_in_dim(held, me * rows.shape[0], rows.shape[0])


def _merge_row_grads(all_rows, g_rows, axis: str | None, shard: int | None, scratch, bound: int):
    """All devices' (row, grad) pairs -> one SparseRows with each row once (mean over devices).

    `all_rows`: every device's rows ([n * U]; this device's rows when `axis` is None).
    `shard`: rows held per device when the table is sharded (ids become local, foreign rows
    the out-of-range sentinel that every scatter drops). `bound`: distinct rows of the global
    batch at most. Returns (SparseRows, scratch).
    """
    if axis is None:
        return SparseRows(all_rows, g_rows), scratch
    grads = all_gather(g_rows, axis) / num_devices(axis)
    uniq, inverse, _, scratch = dedupe(all_rows, scratch, bound)
    merged = jax.ops.segment_sum(grads, inverse, num_segments=uniq.shape[0])
    if shard is not None:
        uniq = _to_local(uniq, axis, shard)
    return SparseRows(uniq, merged), scratch


def value_and_grad(
    loss_on: Callable,
    params: Params,
    spec: ModelSpec,
    batch: dict,
    scratch: jax.Array,
    axis: str | None = None,
    sharded: bool = False,
    bag_fraction: float = 0.0,
) -> tuple[dict, dict, jax.Array]:
    """`loss_on(params, embedded) -> (loss, aux)` differentiated with respect to the batch's
    distinct table rows and every other parameter, averaged over `axis`.

    Look up the rows (`unique_lookup_rows`), fetch their values (from their owners when the
    table is `sharded` over `axis`), embed from those rows alone, differentiate, and merge
    every device's row gradients so each row appears once. `params` passed to `loss_on` lack
    "embedding". Returns (aux, grads with the table's gradient as `SparseRows`, scratch).

    `bag_fraction` > 0: bag fields cost what their real entries cost. The real entries are
    moved into `bag_slots(batch, bag_fraction)` slots and only those are deduplicated,
    gathered, pooled (a segment sum) and scattered back; a batch that does not fit
    (`bags_fit`, on any device) takes the padded path. Both paths compute the same sums over the
    same entries, so they agree up to float rounding (tests/test_bag_compact.py).
    """
    slots = bag_slots(batch, bag_fraction) if spec.bag_vocab_sizes else 0
    if not slots:
        return _value_and_grad(loss_on, params, spec, batch, scratch, axis, sharded, 0)
    fit = bags_fit(batch, slots)
    if axis is not None:  # every device takes the same branch
        fit = jax.lax.pmin(fit.astype(jnp.int32), axis) > 0

    def branch(s):
        def run(scratch):
            aux, grads, scratch = _value_and_grad(
                loss_on, params, spec, batch, scratch, axis, sharded, s
            )
            g = grads["embedding"]["table"]
            return aux, {**grads, "embedding": {"table": (g.ids, g.values)}}, scratch

        return run

    aux, grads, scratch = jax.lax.cond(fit, branch(slots), branch(0), scratch)
    ids, values = grads["embedding"]["table"]
    return aux, {**grads, "embedding": {"table": SparseRows(ids, values)}}, scratch


def _value_and_grad(loss_on, params, spec, batch, scratch, axis, sharded, slots: int):
    rows, single, bags, _, scratch = unique_lookup_rows(spec, batch, scratch, slots)
    table = params["embedding"]["table"]
    all_rows = all_gather(rows, axis)  # gathered once: fetch and merge both need it
    table_rows = _fetch_rows(table, rows, all_rows, axis, sharded)
    others = {k: v for k, v in params.items() if k != "embedding"}

    def on_rows(others, table_rows):
        return loss_on(others, embed_from(table_rows, spec, batch, single, bags))

    grad = jax.value_and_grad(on_rows, argnums=(0, 1), has_aux=True)
    (_, aux), (g_others, g_rows) = grad(others, table_rows)
    shard = table.shape[0] if sharded else None
    bag_len = 0 if "bag_mask" not in batch else batch["bag_mask"].shape[-1]
    global_bound = unique_row_bound(spec, single.shape[0] * num_devices(axis), bag_len)
    g_table, scratch = _merge_row_grads(all_rows, g_rows, axis, shard, scratch, global_bound)
    grads = {**pmean(g_others, axis), "embedding": {"table": g_table}}
    return pmean(aux, axis), grads, scratch


# ------------------------------------------------------------------------------ the update


def _check_sparse(g: Any) -> SparseRows:
    if not isinstance(g, SparseRows):
        raise TypeError(f"row-sparse optimiser got a dense gradient {type(g).__name__}")
    return g


class RowwiseAdagradState(NamedTuple):
    """State of `rowwise_adagrad`."""

    sum_of_squares: Any  # [V, D] per table


def rowwise_adagrad(
    learning_rate: float, initial_accumulator_value: float = 0.1, eps: float = 1e-7
) -> optax.GradientTransformation:
    """Adagrad on touched rows only; matches optax.adagrad's formula row for row. Takes
    `SparseRows` gradients and returns `SparseRows` updates (TypeError for a dense one)."""

    def init_fn(params):
        return RowwiseAdagradState(
            jax.tree.map(lambda p: jnp.full_like(p, initial_accumulator_value), params)
        )

    def update_fn(updates, state, params=None):
        del params

        def one(g, acc):
            g = _check_sparse(g)
            new_rows = gather_rows(acc, g.ids) + jnp.square(g.values)
            acc = acc.at[g.ids].set(new_rows, mode="drop")
            scale = jnp.where(new_rows > 0, jax.lax.rsqrt(new_rows + eps), 0.0)
            return SparseRows(g.ids, -learning_rate * g.values * scale), acc

        pairs = jax.tree.map(one, updates, state.sum_of_squares)
        new_updates = jax.tree.map(lambda _, p: p[0], updates, pairs)
        new_acc = jax.tree.map(lambda _, p: p[1], updates, pairs)
        return new_updates, RowwiseAdagradState(new_acc)

    return optax.GradientTransformation(init_fn, update_fn)


class LazyAdamState(NamedTuple):
    """State of `lazy_adam`."""

    count: jax.Array  # int32 global step (bias correction)
    mu: Any  # [V, D] first moments
    nu: Any  # [V, D] second moments


def lazy_adam(
    learning_rate: float, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8
) -> optax.GradientTransformation:
    """Adam whose moments and rows change only where the batch looked up. Takes `SparseRows`
    gradients and returns `SparseRows` updates (TypeError for a dense one)."""

    def init_fn(params):
        zeros = lambda p: jnp.zeros_like(p)
        return LazyAdamState(
            jnp.zeros((), jnp.int32), jax.tree.map(zeros, params), jax.tree.map(zeros, params)
        )

    def update_fn(updates, state, params=None):
        del params
        count = state.count + 1
        c1 = 1.0 - b1 ** count.astype(jnp.float32)
        c2 = 1.0 - b2 ** count.astype(jnp.float32)

        def one(g, mu, nu):
            g = _check_sparse(g)
            m = b1 * gather_rows(mu, g.ids) + (1.0 - b1) * g.values
            v = b2 * gather_rows(nu, g.ids) + (1.0 - b2) * jnp.square(g.values)
            step = -learning_rate * (m / c1) / (jnp.sqrt(v / c2) + eps)
            return (
                SparseRows(g.ids, step),
                mu.at[g.ids].set(m, mode="drop"),
                nu.at[g.ids].set(v, mode="drop"),
            )

        triples = jax.tree.map(one, updates, state.mu, state.nu)
        pick = lambda k: jax.tree.map(lambda _, t: t[k], updates, triples)
        return pick(0), LazyAdamState(count, pick(1), pick(2))

    return optax.GradientTransformation(init_fn, update_fn)


def apply_updates(params: Any, updates: Any) -> Any:
    """optax.apply_updates that also scatters `SparseRows` updates into their tables."""

    def one(p, u):
        if isinstance(u, SparseRows):
            return p.at[u.ids].add(u.values.astype(p.dtype), mode="drop")
        return optax.apply_updates(p, u)

    return jax.tree.map(one, params, updates)


def global_norm(tree: Any) -> jax.Array:
    """Scalar L2 norm of every leaf of `tree` together, a `SparseRows` counted by its
    values."""
    leaves = [x.values if isinstance(x, SparseRows) else x for x in jax.tree.leaves(tree)]
    return jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in leaves))


def clip_by_global_norm(max_norm: float) -> optax.GradientTransformation:
    """optax.clip_by_global_norm that also measures and scales `SparseRows` gradients."""

    def update_fn(updates, state, params=None):
        del params
        norm = global_norm(updates)
        scale = jnp.where(norm > max_norm, max_norm / norm, 1.0)

        def one(u):
            if isinstance(u, SparseRows):
                return SparseRows(u.ids, u.values * scale)
            return u * scale

        return jax.tree.map(one, updates), state

    return optax.GradientTransformation(lambda _: optax.EmptyState(), update_fn)
