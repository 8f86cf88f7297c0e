"""From trained gates to the discrete architecture, its record and its rendering.

`derive_edges` keeps the edges whose probability exceeds the threshold (`derive_ops`: each
edge's argmax operator after an operator search); `architecture_record` (and `evidence_record`,
`ablation_record` for the masked and ablation searches) is that decision as an
ArchitectureRecord (search/records.py; architecture.json), the single place the kept set is
computed; `render_architecture` draws
it as one grid per task pair (architecture.txt).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from autoheri_jax.model.edges import OPS, Edge, parse_edge
from autoheri_jax.model.gates import edge_probabilities, op_probabilities
from autoheri_jax.model.spec import ModelSpec, Params
from autoheri_jax.search.records import (
    ArchitectureRecord,
    CandidateEdge,
    EdgeAblation,
    EdgeEvidence,
    Evidence,
    Selection,
)

# A selection that refused more edges with a comparison that sees (80% power) only differences
# above this many AUC points says so: the edge sets of this repository's worlds differ by less
# (single edges by under 0.01 cvr* sAUC, experiments/README.md), so such a margin mostly keeps
# the simpler model.
MAX_DETECTABLE_AUC = 0.01


def derive_ops(params: Params, spec: ModelSpec) -> list[str]:
    """Each edge's argmax operator (its fixed operator when ops are not searched)."""
    return argmax_ops(np.asarray(op_probabilities(params, spec)), OPS)


def argmax_ops(op_probs: np.ndarray, op_names: Sequence[str]) -> list[str]:
    """[E, len(op_names)] operator probabilities -> each edge's most probable operator."""
    return [op_names[int(i)] for i in op_probs.argmax(axis=-1)] if op_probs.size else []


def derive_edges(probs: Sequence[float], edges: Sequence[Edge], threshold: float) -> list[Edge]:
    """The discrete architecture: the `edges` whose probability (probs [E]) exceeds
    `threshold`."""
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
    method: str | None = None,
) -> ArchitectureRecord:
    """The record of a gated (or evolved) search: each of the E `edges` kept when its
    probability (probs [E]; logits [E] or None) exceeds `threshold`. op_probs:
    [E, len(op_names)] operator probabilities of an operator search; each candidate then
    records "op" (the argmax) and "op_probs" ({op: prob}). method: the record's search_method
    (None: left out, as an evolved record)."""
    kept = set(derive_edges(probs, edges, threshold))
    ops = argmax_ops(op_probs, op_names) if op_probs is not None else None
    candidates = [
        CandidateEdge(
            edge=e.name,
            description=e.describe(task_names),
            prob=float(probs[k]),
            logit=None if logits is None else float(logits[k]),
            kept=e in kept,
            op=None if ops is None else ops[k],
            op_probs=None
            if op_probs is None
            else {n: float(p) for n, p in zip(op_names, op_probs[k], strict=True)},
        )
        for k, e in enumerate(edges)
    ]
    kept_ops = None if ops is None else tuple(c.op for c in candidates if c.kept)
    return _record(method, mode, threshold, task_names, candidates, kept_ops=kept_ops)


def searched_architecture(
    params: Params,
    spec: ModelSpec,
    threshold: float,
    task_names: Sequence[str],
    mode: str,
    method: str | None = None,
) -> ArchitectureRecord:
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
        method=method,
    )


def decided_by(per_edge: EdgeEvidence, kept: bool, evidence: Evidence) -> tuple[str, str]:
    """Which step of the masked search decided an edge, and why: (decided_by, why). The
    evidence decides unless a validated selection chose a candidate that disagrees with it on
    this edge; then the record says so, with both sides."""
    decision, z = per_edge.decision, per_edge.z
    by_evidence = decision == "kept" or (
        decision == "undecided" and evidence.undecided_rule == "keep"
    )
    sel = evidence.selection
    said = f"evidence {decision} (z {z:+.2f}, threshold {evidence.threshold:.2f})"
    if sel is None:
        return "evidence", said
    chosen = f"the validated selection chose {sel.chosen!r}"
    if kept == by_evidence:
        return "evidence", f"{said}; {chosen}, which agrees"
    return "selection", f"{chosen}, against the {said}"


def evidence_record(
    edges: Sequence[Edge],
    evidence: Evidence,
    per_edge: Sequence[EdgeEvidence],
    kept: np.ndarray,
    task_names: Sequence[str],
    mode: str,
) -> ArchitectureRecord:
    """The record of a masked search (search/evidence.py): `evidence` (with the validated
    selection, when one ran), per candidate its EdgeEvidence and whether `kept` [E] bool (the
    selection's choice, else the evidence's); "prob" is None (no gate was learned)."""
    candidates = []
    for k, e in enumerate(edges):
        by, why = decided_by(per_edge[k], bool(kept[k]), evidence)
        candidates.append(
            _ungated(e, task_names, kept[k], evidence=per_edge[k], decided_by=by, why=why)
        )
    return _record("masked", mode, evidence.threshold, task_names, candidates, evidence=evidence)


def ablation_record(
    edges: Sequence[Edge],
    judged: Selection,
    kept: np.ndarray,
    task_names: Sequence[str],
    mode: str,
) -> ArchitectureRecord:
    """The record of an ablation search (selection.judge over the 2 + 2E or 2 + E
    architectures named as arch_batch.ground_truth_masks, `kept` [E] bool its chosen mask): per
    candidate edge its validation add-one (alone minus none) and drop-one (all minus all but
    it; None when the batch had no drop-one lanes); "prob" is None (no gate was learned)."""
    score = {c.name: c.score for c in judged.candidates}
    dropped = {
        e.name: score["all"] - score[f"drop:{e.name}"] for e in edges if f"drop:{e.name}" in score
    }
    candidates = [
        _ungated(
            e,
            task_names,
            kept[k],
            ablation=EdgeAblation(
                add_one=score[f"only:{e.name}"] - score["none"],
                drop_one=dropped.get(e.name),
            ),
        )
        for k, e in enumerate(edges)
    ]
    return _record("ablation", mode, None, task_names, candidates, ablation=judged)


def _ungated(edge: Edge, task_names: Sequence[str], kept, **judged) -> CandidateEdge:
    """A candidate of a search without gates (masked, ablation): no probability or logit."""
    return CandidateEdge(
        edge=edge.name,
        description=edge.describe(task_names),
        prob=None,
        logit=None,
        kept=bool(kept),
        **judged,
    )


def _record(
    method: str | None,
    mode: str,
    threshold: float | None,
    task_names: Sequence[str],
    candidates: list[CandidateEdge],
    **judged,
) -> ArchitectureRecord:
    return ArchitectureRecord(
        search_mode=mode,
        search_method=method,
        threshold=threshold,
        task_names=tuple(task_names),
        candidates=tuple(candidates),
        kept=tuple(c.edge for c in candidates if c.kept),
        **judged,
    )


def kept_edges(record: ArchitectureRecord) -> list[Edge]:
    return record.kept_edges()


def kept_ops(record: ArchitectureRecord) -> list[str] | None:
    """Each kept edge's searched operator, or None when the search did not choose operators."""
    return None if record.kept_ops is None else list(record.kept_ops)


def _cell(c: CandidateEdge) -> str:
    if c.evidence is not None:
        # "+": the evidence kept the edge and the validated selection chose a candidate without
        # it; "!": kept by the selection although the evidence dropped it (z below -threshold)
        decision = c.evidence.decision
        mark = {"kept": "+", "undecided": "?"}.get(decision, " ")
        if c.kept:
            mark = "!" if decision == "dropped" else "*"
        return f"{c.evidence.z:>+8.2f}{mark}"
    if c.ablation is not None:
        return f"{c.ablation.add_one * 1e4:>+8.1f}{'*' if c.kept else ' '}"
    return f"{c.prob:>8.3f}{'*' if c.kept else ' '}"


def selection_lines(sel: Selection) -> list[str]:
    """The validated selection's scores, each comparison with its margin, and the choice."""
    shown = sel.candidates
    if len(shown) > 4:  # an ablation batch: the extremes, then the comparisons say the rest
        shown = tuple(c for c in shown if c.name in ("none", "all"))
    scores = ", ".join(f"{c.name} ({c.edges} edges) {c.score:.4f}" for c in shown)
    if len(shown) < len(sel.candidates):
        scores += f" (of {len(sel.candidates)} candidates)"
    lines = [
        f"validated selection ({sel.criterion} on validation, candidates retrained): "
        f"{scores}; chosen: {sel.chosen}"
    ]
    for c in sel.comparisons:
        verdict = "more edges win" if c.wins else "not better at the margin: fewer edges kept"
        seen = c.detectable
        power = f", detects {seen:.4f} at 80% power" if seen is not None else ""
        lines.append(
            f"  {c.candidate} - {c.against}: {c.diff:+.4f} AUC (se {c.se:.4f}"
            f"{power}), one-sided p {c.p:.3g} against the margin p < {c.level:.3g}: "
            f"{verdict}"
        )
    # A refusal is only as good as what the margin could have seen; a win needs no power.
    refused = [c.detectable or 0.0 for c in sel.comparisons if not c.wins]
    worst = max(refused, default=0.0)
    if worst > MAX_DETECTABLE_AUC:
        lines.append(
            f"  warning: on {sel.positives} validation conversions the margin refused "
            f"more edges but sees only differences above {worst:.4f} AUC (80% power), wider "
            f"than the {MAX_DETECTABLE_AUC} edges differ by here; raise data.num_valid"
        )
    return lines


def render_architecture(record: ArchitectureRecord, num_layers: int) -> str:
    """architecture.txt: a grid per task pair (rows = upstream layer, columns = downstream
    layer, of the `num_layers` hidden layers per tower), each cell the candidate's figure
    (gate probability, evidence z or add-one), under a header saying how edges were kept."""
    names = record.task_names
    by_pair: dict[tuple[int, int], dict[tuple[int, int], dict]] = {}
    for c in record.candidates:
        e = parse_edge(c.edge)
        by_pair.setdefault((e.src_task, e.dst_task), {})[(e.src_layer, e.dst_layer)] = c
    kept, total = len(record.kept), len(record.candidates)
    masked = record.search_method == "masked"
    if masked:
        ev = record.evidence
        lines = [
            f"AutoHERI derived architecture ({record.search_mode} masked search): {kept} of "
            f"{total} candidate edges kept (contrast z > {record.threshold:.2f} on "
            f"{ev.criterion}, {ev.batches} validation batches x {ev.contexts} contexts"
            + (", then a validated selection)" if ev.selection is not None else ")"),
            "cell = z of the edge's on/off contrast (> 0: the edge lowers the loss); * = kept; "
            "? = undecided (|z| <= threshold, "
            + ev.undecided_rule
            + "ped); "
            + (
                "+ = kept by the evidence, not by the selection; ! = kept by the selection "
                "against the evidence (z < -threshold); "
                if ev.selection is not None
                else ""
            )
            + ". = not a candidate",
        ]
    elif record.search_method == "ablation":
        judged = record.ablation
        dropped = any(c.name.startswith("drop:") for c in judged.candidates)
        lines = [
            f"AutoHERI derived architecture ({record.search_mode} ablation search): {kept} "
            f"of {total} candidate edges kept (no edge, all, each alone"
            + (" and all but each" if dropped else "")
            + " retrained; judged on validation with a paired margin)",
            f"cell = validation {judged.criterion} of the edge alone minus no edge (x 1e4); "
            "* = kept; . = not a candidate",
        ]
    else:
        how = record.search_mode  # an evolved record's mode is "evolution", its method None
        if record.search_method is not None:
            how = f"{how} {record.search_method}"
        lines = [
            f"AutoHERI derived architecture ({how} search): {kept} "
            f"of {total} candidate edges kept (probability > {record.threshold})",
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
    if masked and ev.selection is not None:
        lines += ["", *selection_lines(ev.selection)]
    if record.ablation is not None:
        lines += ["", *selection_lines(record.ablation)]
    if masked:
        lines.append("")
        lines.append("evidence per edge: mean contrast (nats x 1e4) [95% CI], z, decision")
        if ev.note:
            lines.append(f"  {ev.note}")
        for c in record.candidates:
            e = c.evidence
            if e.mean is None:
                continue
            lines.append(
                f"  {c.edge:<12} {e.mean * 1e4:+8.2f} [{e.ci_lo * 1e4:+8.2f}, "
                f"{e.ci_hi * 1e4:+8.2f}]  z {e.z:+6.2f}  {e.decision}"
            )
    if record.kept_ops is not None and record.kept:
        lines.append("")
        lines.append("operators of the kept edges (argmax of the operator search):")
        ops = {c.edge: c for c in record.candidates}
        for name, op in zip(record.kept, record.kept_ops, strict=True):
            probs = " ".join(f"{k}={v:.3f}" for k, v in ops[name].op_probs.items())
            lines.append(f"  {name:<12} {op:<10} ({probs})")
    if not record.kept:
        lines.append("")
        lines.append("No edge kept: the derived model is ESMM's independent towers.")
    return "\n".join(lines) + "\n"
