"""Named random streams: every `fold_in` tag the package uses, in one table, and why none meet.

A key is a node of a tree; `stream(parent, name, i)` is the child fold_in(parent, base + i) of
the stream `name` = (parent kind, base, size) below, 0 <= i < size. Two children of the same
parent are independent when their tags differ, so the rule is simply that the [base, base +
size) ranges of one parent kind never overlap; `_check_disjoint` proves it at import.

    key(seed) --split--> init, train                              (train/step.init_state)
    init   --split--> embedding, towers;  init --"arch_noise"-->   (model/network.init_params)
    towers --"task" t--> task --"layer" j--> layer j < L; j = L is the tower's head
    layer  --"own_block"--> the own-input kernel block;  --"edge_block" code(e)--> an edge's
           block;  --"aggregation"--> the gated-sum / attention parameters of the layer
    aggregation --"attention"-->, --"edge_projection" code(e)-->         (model/aggregation.py)
    mlp    --"mlp_layer" j--> layer j of an MLP stack; a PLE level key also has
           --"ple_task_gates"--> and --"ple_shared_gate"-->       (blocks.py, families.py)
    train  --"step" s--> step key --"device" d--> the device's key    (train/step.py; d = 0
           where one program covers the global batch: single and the mesh launcher's jit)
    step key --"edge_mask"--> the step's Bernoulli edge mask (a masked supernet's step)
    device key --"dropout" site--> one dropout mask (`dropout_site`)

Keys are typed (`jax.random.key`, dtype key<fry>: the default threefry2x32 impl, whose bits are
those of the legacy uint32[2] `PRNGKey`). The numbers are those the code always used, so
results stay bitwise the same; the table only names them. Sizes bound what a tag can encode:
at most 999 tasks and 1000 layers per tower.
"""

from __future__ import annotations

import itertools
from typing import NamedTuple

import jax

MAX_TASKS = 999
MAX_LAYERS = 1000


class Stream(NamedTuple):
    parent: str  # the kind of key it is folded into
    base: int
    size: int


STREAMS: dict[str, Stream] = {
    "arch_noise": Stream("init", 2, 1),  # split(init) uses no fold_in tag
    "task": Stream("towers", 0, MAX_TASKS),
    "layer": Stream("task", 0, MAX_LAYERS + 1),  # layer j < L, then the head at j = L
    "own_block": Stream("layer", 0, 1),
    "edge_block": Stream("layer", 2, MAX_TASKS * MAX_LAYERS),  # by edge_code
    "aggregation": Stream("layer", 1_000_000, 1),
    "attention": Stream("aggregation", 0, 1),
    "edge_projection": Stream("aggregation", 1, MAX_TASKS * MAX_LAYERS),  # by edge_code
    # blocks.mlp_init's layer j; PLE's level l (a level is a layer of its stack; the towers
    # after the last level take l = levels)
    "mlp_layer": Stream("mlp", 0, MAX_LAYERS),
    "ple_task_gates": Stream("mlp", MAX_LAYERS, 1),
    "ple_shared_gate": Stream("mlp", MAX_LAYERS + 1, 1),
    "aitm_projection": Stream("aitm_attention", 0, 3),  # its query, key and value maps
    "step": Stream("train", 0, 2**31),
    "device": Stream("step", 0, 2**31),
    # the step's edge mask of a masked supernet (SupernetConfig.edge_keep_prob): one draw per
    # step shared by every device, so data-parallel replicas train the same sub-network
    "edge_mask": Stream("step", 2**31, 1),
    # dropout masks: AutoHERI layer (t, j) at dropout_site(t, j); a baseline family numbers its
    # sites 1, 2, ... in call order. A model is one or the other, so they never meet.
    "dropout": Stream("device", 0, MAX_TASKS * MAX_LAYERS),
}


def _check_disjoint() -> None:
    by_parent: dict[str, list[tuple[int, int, str]]] = {}
    for name, s in STREAMS.items():
        by_parent.setdefault(s.parent, []).append((s.base, s.base + s.size, name))
    for parent, spans in by_parent.items():
        spans.sort()
        for (_, end, a), (start, _, b) in itertools.pairwise(spans):
            if start < end:
                raise AssertionError(f"streams {a!r} and {b!r} of {parent!r} keys overlap")


_check_disjoint()


def stream(key: jax.Array, name: str, index: int | jax.Array = 0) -> jax.Array:
    """The child key of `key` in stream `name`: fold_in(key, base + index).

    A static `index` is checked against the stream's size; a traced one (a step or device
    index) cannot be, and its streams are sized for any int32.
    """
    s = STREAMS[name]
    if isinstance(index, int) and not 0 <= index < s.size:
        raise ValueError(f"random stream {name!r}: index {index} outside [0, {s.size})")
    # base 0 folds the index itself: a traced step or device index gets no extra add
    return jax.random.fold_in(key, s.base + index if s.base else index)


def edge_stream(key: jax.Array, name: str, code: int) -> jax.Array:
    """`stream` of an edge-coded stream ("edge_block", "edge_projection") for `edge_code`."""
    return stream(key, name, code - 1)


def edge_code(src_task: int, src_layer: int) -> int:
    """An edge's identity inside a downstream layer: 1 + 1000 src_task + src_layer, so a block's
    key does not depend on which other edges the layer has (>= 1: 0 would be the own block)."""
    if not (0 <= src_task < MAX_TASKS and 0 <= src_layer < MAX_LAYERS):
        raise ValueError(f"edge from task {src_task} layer {src_layer}: outside the key space")
    return 1 + src_task * MAX_LAYERS + src_layer


def dropout_site(task: int, layer: int) -> int:
    """AutoHERI layer (task, layer)'s dropout tag under the device key."""
    return task * MAX_LAYERS + layer
