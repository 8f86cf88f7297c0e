"""A fixed architecture as a lane of a masked supernet: which mask, and its params cut out.

An architecture batch (train/arch_batch.py) trains edge masks of one unsearched supernet
`src`; lane a computes, with the gates masks[a], what the model with just those edges
computes. `lane_mask(src, dst)` says whether a model `dst` (ESMM, an all-on model, a derived
architecture) is such a lane: the same settings but for the edge choice, the same data,
concat edges only (they own nothing but their kernel row blocks; network.init_params draws
every block from its identity, so the blocks `dst` has are drawn as in `src`), and its edges
a subset of `src`'s. Then `project_params(src, params, dst)` keeps of each kernel the own
block and the blocks of `dst`'s edges, in `dst`'s order, and drops the rest: the blocks of
masked edges, which never entered the lane's outputs (their gate is 0). On the lane's
initial params this gives `network.init_params` of `dst` bitwise (`same_initial_params`
checks it).
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from autoheri_jax.model.edges import incoming
from autoheri_jax.model.spec import EDGE_CHOICE_FIELDS, ModelSpec, Params

# what a lane of `src` and the model `dst` may differ in: the edge choice and the name of
# the (concat) operator of edges that `dst` may not have
_FREE_FIELDS = (*EDGE_CHOICE_FIELDS, "aggregation")


def _concat_only(spec: ModelSpec) -> bool:
    return all(spec.edge_op(k) == "concat" for k in range(spec.num_edges))


def lane_mask(src: ModelSpec, dst: ModelSpec) -> np.ndarray | None:
    """[E of src] float32 0/1 mask under which `src` is the model `dst`, or None when no mask
    is (another family, other settings or data, a non-concat edge, an edge `src` lacks)."""
    if (
        src.model.family != "autoheri"
        or dst.model.family != "autoheri"
        or src.has_arch
        or dst.has_arch
    ):
        return None
    if not (_concat_only(src) and _concat_only(dst)):
        return None
    data = ("vocab_sizes", "num_dense", "num_tasks", "bag_vocab_sizes", "output")
    if any(getattr(src, f) != getattr(dst, f) for f in data):
        return None
    free = {f: getattr(src.model, f) for f in _FREE_FIELDS}
    if dataclasses.replace(dst.model, **free) != src.model:
        return None
    where = {e: k for k, e in enumerate(src.edges)}
    if any(e not in where for e in dst.edges) or len(set(dst.edges)) != dst.num_edges:
        return None
    mask = np.zeros(src.num_edges, np.float32)
    mask[[where[e] for e in dst.edges]] = 1.0
    return mask


def project_params(src: ModelSpec, params: Params, dst: ModelSpec) -> Params:
    """`params` of `src` (one lane, no lane axis) as `dst`'s params: the embedding and every
    bias and head as they are, each layer kernel's own block and `dst`'s edge blocks.
    ValueError when `dst` is not a lane of `src` (`lane_mask` is None)."""
    if lane_mask(src, dst) is None:
        raise ValueError("dst is not a lane of src (lane_mask is None)")
    towers = {}
    for t in range(src.num_tasks):
        tower = dict(params["towers"][f"task_{t}"])
        for j in range(len(src.model.hidden)):
            layer = dict(tower[f"layer_{j}"])
            sizes = src.layer_input_dims(t, j)
            starts = np.concatenate([[0], np.cumsum(sizes)])
            inc = incoming(src.edges, t, j)
            block = {None: 0, **{src.edges[k]: n + 1 for n, k in enumerate(inc)}}
            keep = [None, *(dst.edges[k] for k in incoming(dst.edges, t, j))]
            rows = np.concatenate([np.arange(starts[block[e]], starts[block[e] + 1]) for e in keep])
            layer["kernel"] = layer["kernel"][rows]
            tower[f"layer_{j}"] = layer
        towers[f"task_{t}"] = tower
    return {**params, "towers": towers}


def same_initial_params(
    src: ModelSpec, dst: ModelSpec, key: jax.Array, src_params: Params | None = None
) -> bool:
    """Whether `src`'s fresh params from `key` (`src_params` when given), projected, are
    `dst`'s fresh params from `key` bitwise (the lane and `dst` start from the same weights)."""
    from autoheri_jax.model.network import init_params

    src_params = init_params(key, src) if src_params is None else src_params
    got = project_params(src, src_params, dst)
    want = init_params(key, dst)
    if jax.tree.structure(got) != jax.tree.structure(want):
        return False
    same = jax.tree.map(lambda a, b: bool(np.array_equal(np.asarray(a), np.asarray(b))), got, want)
    return all(jax.tree.leaves(same))
