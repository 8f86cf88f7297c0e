"""Candidate cross-task edges: which upstream layer may feed which downstream layer.

An edge `u.i->d.j` feeds the output of hidden layer i of task u's tower into the input of
hidden layer j of task d's tower (u < d; tasks are the funnel stages in order). The edge set
is static structure: it fixes parameter shapes, so it lives outside the params pytree.

  none          no edges: independent towers over a shared embedding (= ESMM)
  parallel      u.l -> d.l   (same depth only)
  hierarchical  u.i -> d.j   (any upstream depth into any downstream depth)
  fixed         an explicit list, e.g. a derived architecture
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import NamedTuple

OPS = ("concat", "gated_sum", "attention")  # aggregation operators; the order of op_logits
AGGREGATIONS = (*OPS, "search")  # a layer's aggregation: one operator, or searched per edge


def split_edge_op(text: str) -> tuple[str, str | None]:
    """ "u.i->d.j:op" -> ("u.i->d.j", op); without a suffix the op is None."""
    name, sep, op = text.partition(":")
    if not sep:
        return text, None
    op = op.strip()
    if op not in OPS:
        raise ValueError(f"edge {text!r}: operator {op!r} is not one of {OPS}")
    return name, op


_EDGE_RE = re.compile(r"^\s*(\d+)\.(\d+)\s*->\s*(\d+)\.(\d+)\s*$")


class Edge(NamedTuple):
    """Edge `src_task.src_layer -> dst_task.dst_layer`: that upstream hidden layer's output
    feeds that downstream hidden layer (task and layer indices 0-based)."""

    src_task: int
    src_layer: int
    dst_task: int
    dst_layer: int

    @property
    def name(self) -> str:
        return f"{self.src_task}.{self.src_layer}->{self.dst_task}.{self.dst_layer}"

    def describe(self, task_names: Sequence[str]) -> str:
        """The edge with task names, e.g. "click.layer0 -> conversion.layer1"."""
        return (
            f"{task_names[self.src_task]}.layer{self.src_layer} -> "
            f"{task_names[self.dst_task]}.layer{self.dst_layer}"
        )


def parse_edge(text: str) -> Edge:
    """Edge(u, i, d, j) of the text "u.i->d.j"; ValueError for any other text (no operator
    suffix: see `split_edge_op`)."""
    m = _EDGE_RE.match(text)
    if m is None:
        raise ValueError(f"edge {text!r} must look like 'u.i->d.j' (task.layer, 0-based)")
    return Edge(*(int(g) for g in m.groups()))


def task_pairs(num_tasks: int, pairs: str) -> list[tuple[int, int]]:
    """(upstream, downstream) task pairs that may carry edges: each stage and the next
    ("adjacent"), or every earlier stage and a later one ("all"); ValueError otherwise."""
    if pairs == "adjacent":
        return [(u, u + 1) for u in range(num_tasks - 1)]
    if pairs == "all":
        return [(u, d) for d in range(num_tasks) for u in range(d)]
    raise ValueError(f"unknown edge_pairs {pairs!r}")


def candidate_edges(
    mode: str,
    num_tasks: int,
    num_layers: int,
    pairs: str = "adjacent",
    fixed: Sequence[str] = (),
) -> tuple[Edge, ...]:
    """The ordered candidate edge set of `mode` (edge_mode) over `num_tasks` towers of
    `num_layers` hidden layers; edge k owns arch logit k. "fixed" takes the edges of `fixed`
    ("u.i->d.j"), sorted by destination. ValueError for an unknown mode or pairs, and for a
    fixed edge that is out of range, duplicated or not upstream -> downstream."""
    if mode == "none":
        return ()
    if mode == "fixed":
        edges = tuple(parse_edge(e) for e in fixed)
        for e in edges:
            if not (0 <= e.src_task < e.dst_task < num_tasks):
                raise ValueError(f"edge {e.name}: needs 0 <= upstream < downstream < {num_tasks}")
            if not (0 <= e.src_layer < num_layers and 0 <= e.dst_layer < num_layers):
                raise ValueError(f"edge {e.name}: layers must lie in [0, {num_layers})")
        if len(set(edges)) != len(edges):
            raise ValueError(f"duplicate edges in {list(fixed)}")
        return tuple(
            sorted(edges, key=lambda e: (e.dst_task, e.dst_layer, e.src_task, e.src_layer))
        )
    edges = []
    for u, d in task_pairs(num_tasks, pairs):
        for j in range(num_layers):
            sources = [j] if mode == "parallel" else range(num_layers)
            if mode not in ("parallel", "hierarchical"):
                raise ValueError(f"unknown edge_mode {mode!r}")
            edges.extend(Edge(u, i, d, j) for i in sources)
    return tuple(sorted(edges, key=lambda e: (e.dst_task, e.dst_layer, e.src_task, e.src_layer)))


def incoming(edges: Sequence[Edge], task: int, layer: int) -> list[int]:
    """Indices of the edges that enter `task`'s hidden layer `layer`, in edge order."""
    return [k for k, e in enumerate(edges) if e.dst_task == task and e.dst_layer == layer]
