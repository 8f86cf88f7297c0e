"""The shared embedding layer: field ids -> rows of one table -> B x (F + Fb) x D -> x.

Dense lookups (the whole table is a parameter) live here; the row-sparse training path
(train/sparse_embedding.py) reuses `lookup_rows` and `embed_from` over a batch's unique rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp

from autoheri_jax.model.spec import ModelSpec, Params


def lookup_rows(spec: ModelSpec, inputs: Mapping[str, jax.Array]):
    """Table rows of every lookup: single fields [B, F], bag entries [B, Fb, L] (or None).

    Ids are clamped into their field's rows, so a field never reads another field's
    embeddings and train/sparse_embedding.unique_row_bound holds. Datasets reject
    out-of-range ids when built (CTRDataset), so the clamp changes nothing for data that got
    here.
    """
    offsets = jnp.asarray(spec.field_offsets)
    num_single = len(spec.vocab_sizes)
    top = jnp.asarray(spec.vocab_sizes + spec.bag_vocab_sizes, jnp.int32) - 1
    single = jnp.clip(inputs["sparse"], 0, top[None, :num_single]) + offsets[None, :num_single]
    bags = None
    if spec.bag_vocab_sizes:
        ids = jnp.clip(inputs["bag_ids"], 0, top[None, num_single:, None])
        bags = ids + offsets[None, num_single:, None]
    return single, bags


class CompactBags(NamedTuple):
    """A batch's bag entries with the padding left out: C slots, the real entries first in
    (row, field, position) order, then unused slots (index: any row, weight 0, segment B x Fb).
    """

    index: jax.Array  # int32 [C]: row of `table` in embed_from
    segment: jax.Array  # int32 [C]: b * Fb + f of the entry; B * Fb in unused slots
    weight: jax.Array  # float32 [C]: the entry's pooling weight (bag_weights); 0 in unused slots


def bag_weights(spec: ModelSpec, inputs: Mapping[str, jax.Array]) -> jax.Array:
    """[B, Fb, L] pooling weight of every bag entry: its mask, times its value if weighted."""
    mask = inputs["bag_mask"]
    return mask * inputs["bag_values"] if spec.model.bag_value_weighted else mask


def embed_from(
    table: jax.Array,
    spec: ModelSpec,
    inputs: Mapping[str, jax.Array],
    single: jax.Array,
    bags: jax.Array | CompactBags | None,
) -> jax.Array:
    """B x (F + Fb) x D from `table` rows: `single` [B, F] and `bags` [B, Fb, L] index it, or
    `bags` is the batch's real entries alone (`CompactBags`, train/sparse_embedding.py).

    `table` is the whole embedding table, or just a batch's unique rows (sparse updates).
    """
    out = jnp.take(table, single, axis=0)
    if bags is not None:
        mask = inputs["bag_mask"]
        if isinstance(bags, CompactBags):  # gather and sum only the entries present
            b, fb = mask.shape[0], mask.shape[1]
            vectors = table.at[bags.index].get(mode="promise_in_bounds")  # C x D
            pooled = jax.ops.segment_sum(
                bags.weight[:, None] * vectors,
                bags.segment,
                num_segments=b * fb,
                indices_are_sorted=True,
            ).reshape(b, fb, -1)
        else:
            vectors = jnp.take(table, bags, axis=0)  # B x Fb x L x D
            pooled = jnp.einsum("bfl,bfld->bfd", bag_weights(spec, inputs), vectors)
        if spec.model.bag_pooling == "mean":
            pooled = pooled / jnp.maximum(jnp.sum(mask, axis=-1), 1.0)[..., None]
        out = jnp.concatenate([out, pooled], axis=1)
    return out


def embed(params: Params, spec: ModelSpec, inputs: Mapping[str, jax.Array]) -> jax.Array:
    """B x (F + Fb) x D field embeddings from the shared table.

    inputs: sparse int32 [B, F] per-field ids; with bag fields also bag_ids int32 [B, Fb, L],
    bag_values and bag_mask float32 [B, Fb, L] (mask 0 = padding).
    """
    single, bags = lookup_rows(spec, inputs)
    return embed_from(params["embedding"]["table"], spec, inputs, single, bags)


def embed_distinct_bags(params: Params, spec: ModelSpec, inputs: Mapping) -> jax.Array:
    """`embed` of an evaluation batch whose bag fields list each distinct bag once
    (data/eval_batches.py): inputs["bags"][f] holds ids / values / mask [S_f, L_f] and, for a
    field shared between rows, slot [B] (row b's bag); without slot, S_f = B. Each bag is
    pooled once, as `embed_from` pools it (clamped ids, value weights, sum or mean), then
    handed to its rows: the same vectors up to float rounding, for S_f x L_f lookups instead
    of B x max_bag_len."""
    table = params["embedding"]["table"]
    offsets = spec.field_offsets
    num_single = len(spec.vocab_sizes)
    top = jnp.asarray(spec.vocab_sizes, jnp.int32) - 1
    single = jnp.clip(inputs["sparse"], 0, top[None, :]) + jnp.asarray(offsets[:num_single])
    out = jnp.take(table, single, axis=0)
    if not spec.bag_vocab_sizes:
        return out
    pooled = []
    for f, bag in enumerate(inputs["bags"]):
        ids = jnp.clip(bag["ids"], 0, spec.bag_vocab_sizes[f] - 1) + int(offsets[num_single + f])
        vectors = jnp.take(table, ids, axis=0)  # S x L x D
        mask = bag["mask"]
        weights = mask * bag["values"] if spec.model.bag_value_weighted else mask
        bag_vectors = jnp.einsum("sl,sld->sd", weights, vectors)
        if spec.model.bag_pooling == "mean":
            bag_vectors = bag_vectors / jnp.maximum(jnp.sum(mask, axis=-1), 1.0)[:, None]
        pooled.append(jnp.take(bag_vectors, bag["slot"], axis=0) if "slot" in bag else bag_vectors)
    return jnp.concatenate([out, jnp.stack(pooled, axis=1)], axis=1)


def model_input(
    params: Params,
    spec: ModelSpec,
    inputs: Mapping[str, jax.Array],
    *,
    embedded: jax.Array | None = None,
) -> jax.Array:
    """x: B x input_dim, the flattened field embeddings joined with the dense features;
    `embedded` (B x (F + Fb) x D, e.g. from the sparse step's unique rows) replaces the
    table lookup."""
    if embedded is None:
        embedded = embed(params, spec, inputs)
    x = embedded.reshape(inputs["sparse"].shape[0], -1)
    if spec.num_dense:
        x = jnp.concatenate([x, inputs["dense"].astype(x.dtype)], axis=-1)
    return x
