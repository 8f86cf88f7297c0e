"""From trained gates to the discrete architecture, its record and its rendering.

`derive(...)` keeps the edges whose probability exceeds the threshold (with each kept edge's
argmax operator after an operator search); `architecture_record` is that decision as JSON
(architecture.json), the single place the kept set is computed; `render_architecture` draws
it as one grid per task pair (architecture.txt).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from autoheri_jax.model.edges import OPS, Edge, parse_edge
from autoheri_jax.model.gates import edge_probabilities, op_probabilities
from autoheri_jax.model.spec import ModelSpec, Params


def derive_ops(params: Params, spec: ModelSpec) -> list[str]:
    """Each edge's argmax operator (its fixed operator when ops are not searched)."""
    return argmax_ops(np.asarray(op_probabilities(params, spec)), OPS)


def argmax_ops(op_probs: np.ndarray, op_names: Sequence[str]) -> list[str]:
    """[E, len(op_names)] operator probabilities -> each edge's most probable operator."""
    return [op_names[int(i)] for i in op_probs.argmax(axis=-1)] if op_probs.size else []


def derive_edges(probs: Sequence[float], edges: Sequence[Edge], threshold: float) -> list[Edge]:
    """The discrete architecture: edges whose probability exceeds `threshold`."""
    return [e for e, p in zip(edges, probs, strict=True) if float(p) > threshold]


def architecture_record(
    edges: Sequence[Edge],
    probs: np.ndarray,
    logits: np.ndarray | None,
    threshold: float,
    task_names: Sequence[str],
    mode: str,
    op_probs: np.ndarray | None = None,
    op_names: Sequence[str] = (),
) -> dict:
    """op_probs: [E, len(op_names)] operator probabilities of an operator search; each
    candidate then records "op" (the argmax) and "op_probs" ({op: prob})."""
    kept = set(derive_edges(probs, edges, threshold))
    ops = argmax_ops(op_probs, op_names) if op_probs is not None else None
    candidates = []
    for k, e in enumerate(edges):
        c = {
            "edge": e.name,
            "description": e.describe(task_names),
            "prob": float(probs[k]),
            "logit": None if logits is None else float(logits[k]),
            "kept": e in kept,
        }
        if op_probs is not None:
            c["op"] = ops[k]
            c["op_probs"] = {n: float(p) for n, p in zip(op_names, op_probs[k], strict=True)}
        candidates.append(c)
    record = {
        "search_mode": mode,
        "threshold": threshold,
        "task_names": list(task_names),
        "candidates": candidates,
        "kept": [c["edge"] for c in candidates if c["kept"]],
    }
    if op_probs is not None:
        record["kept_ops"] = [c["op"] for c in candidates if c["kept"]]
    return record


def searched_architecture(
    params: Params, spec: ModelSpec, threshold: float, task_names: Sequence[str], mode: str
) -> dict:
    """The record of a one-shot search's outcome: its gates (and operators) read off `params`."""
    op_probs = np.asarray(op_probabilities(params, spec)) if spec.searches_ops else None
    return architecture_record(
        spec.edges,
        np.asarray(edge_probabilities(params, spec)),
        np.asarray(params["arch"]["edge_logits"]),
        threshold,
        task_names,
        mode,
        op_probs=op_probs,
        op_names=OPS,
    )


def evidence_record(
    edges: Sequence[Edge], evidence: dict, task_names: Sequence[str], mode: str
) -> dict:
    """The record of a masked search (search/evidence.py): per candidate its contrast's mean,
    95% interval, z and decision; "prob" is None (no gate was learned)."""
    candidates = [
        {
            "edge": e.name,
            "description": e.describe(task_names),
            "prob": None,
            "logit": None,
            "kept": bool(evidence["kept"][k]),
            "evidence": evidence["per_edge"][k],
        }
        for k, e in enumerate(edges)
    ]
    meta = {k: v for k, v in evidence.items() if k not in ("per_edge", "kept")}
    return {
        "search_mode": mode,
        "search_method": "masked",
        "threshold": evidence["threshold"],
        "task_names": list(task_names),
        "candidates": candidates,
        "kept": [c["edge"] for c in candidates if c["kept"]],
        "evidence": meta,
    }


def kept_edges(record: dict) -> list[Edge]:
    return [parse_edge(e) for e in record["kept"]]


def kept_ops(record: dict) -> list[str] | None:
    """Each kept edge's searched operator, or None when the search did not choose operators."""
    return record.get("kept_ops")


def _cell(c: dict) -> str:
    if c.get("evidence") is not None:
        # "+": the evidence kept the edge and the validated selection chose a candidate without it
        mark = {"kept": "+", "undecided": "?"}.get(c["evidence"]["decision"], " ")
        mark = "*" if c["kept"] else mark
        return f"{c['evidence']['z']:>+8.2f}{mark}"
    return f"{c['prob']:>8.3f}{'*' if c['kept'] else ' '}"


def render_architecture(record: dict, num_layers: int) -> str:
    """A grid per task pair: rows = upstream layer, columns = downstream layer."""
    names = record["task_names"]
    by_pair: dict[tuple[int, int], dict[tuple[int, int], dict]] = {}
    for c in record["candidates"]:
        e = parse_edge(c["edge"])
        by_pair.setdefault((e.src_task, e.dst_task), {})[(e.src_layer, e.dst_layer)] = c
    kept, total = len(record["kept"]), len(record["candidates"])
    masked = record.get("search_method") == "masked"
    if masked:
        ev = record["evidence"]
        lines = [
            f"AutoHERI derived architecture ({record['search_mode']} masked search): {kept} of "
            f"{total} candidate edges kept (contrast z > {record['threshold']:g} on "
            f"{ev['criterion']}, {ev['batches']} validation batches x {ev['contexts']} contexts"
            + (", then a validated selection)" if ev.get("selection") else ")"),
            "cell = z of the edge's on/off contrast (> 0: the edge lowers the loss); * = kept; "
            "? = undecided (|z| <= threshold, "
            + ev["undecided_rule"]
            + "ped); "
            + ("+ = kept by the evidence, not by the selection; " if ev.get("selection") else "")
            + ". = not a candidate",
        ]
    else:
        lines = [
            f"AutoHERI derived architecture ({record['search_mode']} search): {kept} of {total} "
            f"candidate edges kept (probability > {record['threshold']})",
            "cell = edge probability; * = kept; . = not a candidate",
        ]
    for (u, d), cells in sorted(by_pair.items()):
        lines.append("")
        lines.append(f"{names[u]} (rows: layer i) -> {names[d]} (columns: layer j)")
        lines.append("        " + "".join(f"{'j=' + str(j):>9}" for j in range(num_layers)))
        for i in range(num_layers):
            row = f"  i={i:<4}"
            for j in range(num_layers):
                c = cells.get((i, j))
                row += f"{'.':>9}" if c is None else _cell(c)
            lines.append(row)
    if masked and ev.get("selection"):
        sel = ev["selection"]
        scores = ", ".join(
            f"{c['name']} ({c['edges']} edges) {c['score']:.4f}" for c in sel["candidates"]
        )
        lines.append("")
        lines.append(
            f"validated selection ({sel['criterion']} on validation, candidates retrained): "
            f"{scores}; chosen: {sel['chosen']}"
        )
    if masked:
        lines.append("")
        lines.append("evidence per edge: mean contrast (nats x 1e4) [95% CI], z, decision")
        if ev.get("note"):
            lines.append(f"  {ev['note']}")
        for c in record["candidates"]:
            e = c["evidence"]
            if e["mean"] is None:
                continue
            lines.append(
                f"  {c['edge']:<12} {e['mean'] * 1e4:+8.2f} [{e['ci_lo'] * 1e4:+8.2f}, "
                f"{e['ci_hi'] * 1e4:+8.2f}]  z {e['z']:+6.2f}  {e['decision']}"
            )
    if record.get("kept_ops") is not None and record["kept"]:
        lines.append("")
        lines.append("operators of the kept edges (argmax of the operator search):")
        ops = {c["edge"]: c for c in record["candidates"]}
        for name, op in zip(record["kept"], record["kept_ops"], strict=True):
            probs = " ".join(f"{k}={v:.3f}" for k, v in ops[name]["op_probs"].items())
            lines.append(f"  {name:<12} {op:<10} ({probs})")
    if not record["kept"]:
        lines.append("")
        lines.append("No edge kept: the derived model is ESMM's independent towers.")
    return "\n".join(lines) + "\n"
