"""The search's records as types: what architecture.json (and results.json's "architecture")
holds, the masked search's evidence and the validated selection.

Each record is a frozen dataclass whose `to_json()` is the dict written to disk (the layout in
docs/outputs.md) and whose `from_json(obj, source)` reads one back, refusing a key the type
does not know or lacks one it needs (RecordError, naming the key, where in the record it sits
and `source`, the file). Optional fields (those whose default is None) are left out of the JSON
when None (an ablation record has no "evidence", a gradient search's candidates no
"decided_by") and read back as None when absent. Values are stored as JSON's own types (numpy
scalars and arrays become Python floats, ints, bools and tuples when a record is built), so
`from_json(r.to_json()) == r` holds exactly: floats print with repr (json's default) and read
back bit for bit, and a NaN (a score the selection could not compute) is written as JSON's
`NaN` and read back as a NaN. Two records are equal when their JSON texts are, so a NaN field
equals a NaN field.

The records, outermost first:

  ArchitectureRecord  the derived architecture: every candidate edge (CandidateEdge) and the
                      kept ones; a masked search adds its Evidence, an ablation search its
                      Selection over the ablation batch.
  Evidence            the masked search's settings and summary (search/evidence.py), with the
                      validated selection (search/selection.py) when one ran.
  Selection           a validated selection (or ablation batch): the scored candidates
                      (ScoredCandidate), the paired comparisons (Comparison) and the choice.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any, ClassVar, TypeVar

import numpy as np

from autoheri_jax.model.edges import Edge, parse_edge

R = TypeVar("R", bound="Record")


class RecordError(ValueError):
    """A record's JSON is not the layout of its type; the message names the key and the file."""


def _plain(value: Any) -> Any:
    """value as JSON's types: numpy scalars -> Python scalars, arrays and lists -> tuples."""
    if isinstance(value, Record):
        return value
    if isinstance(value, np.ndarray):
        return tuple(_plain(v) for v in value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return tuple(_plain(v) for v in value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def _encode(value: Any) -> Any:
    if isinstance(value, Record):
        return value.to_json()
    if isinstance(value, tuple):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    return value


@dataclasses.dataclass(frozen=True, eq=False, kw_only=True)
class Record:
    """Base of the record types: JSON in and out, equality by JSON text (module docstring)."""

    KIND: ClassVar[str] = "record"  # what the error messages call it
    # field -> (its record type, "one" | "many" (a list of them) | "mapping" ({name: one}))
    NESTED: ClassVar[dict[str, tuple[type[Record], str]]] = {}

    @classmethod
    def _optional(cls, f: dataclasses.Field) -> bool:
        return f.default is None

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, _plain(getattr(self, f.name)))

    def to_json(self) -> dict:
        """The record as written to disk (optional fields that are None left out)."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None and self._optional(f):
                continue
            out[f.name] = _encode(value)
        return out

    @classmethod
    def from_json(cls: type[R], obj: Any, source: str = "<record>", where: str = "") -> R:
        """The record of `obj` (a dict as `to_json` writes it); RecordError naming the key,
        where it sits (`where`, e.g. "evidence.selection") and the file (`source`) when a key
        is unknown or missing or a value is not an object where one is needed."""
        at = f" at {where}" if where else ""
        if not isinstance(obj, Mapping):
            raise RecordError(
                f"{source}: the {cls.KIND}{at} is {type(obj).__name__}, expected an object"
            )
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = [k for k in obj if k not in fields]
        if unknown:
            raise RecordError(
                f"{source}: unknown key {unknown[0]!r} in the {cls.KIND}{at} (known: "
                f"{sorted(fields)})"
            )
        missing = [n for n, f in fields.items() if n not in obj and not cls._optional(f)]
        if missing:
            raise RecordError(f"{source}: missing key {missing[0]!r} in the {cls.KIND}{at}")
        kw = {}
        for name, value in obj.items():
            sub, kind = cls.NESTED.get(name, (None, "one"))
            path = f"{where}.{name}" if where else name
            if sub is None or value is None:
                kw[name] = value
            elif kind == "many":
                if not isinstance(value, list):
                    raise RecordError(
                        f"{source}: {path} is {type(value).__name__}, expected a list"
                    )
                kw[name] = tuple(
                    sub.from_json(v, source, f"{path}[{i}]") for i, v in enumerate(value)
                )
            elif kind == "mapping":
                if not isinstance(value, Mapping):
                    raise RecordError(
                        f"{source}: {path} is {type(value).__name__}, expected an object"
                    )
                kw[name] = {k: sub.from_json(v, source, f"{path}.{k}") for k, v in value.items()}
            else:
                kw[name] = sub.from_json(value, source, path)
        try:
            return cls(**kw)
        except (TypeError, ValueError) as e:
            raise RecordError(f"{source}: the {cls.KIND}{at} is inconsistent: {e}") from None

    def json_text(self) -> str:
        """The canonical JSON text (what equality compares; NaN as `NaN`)."""
        return json.dumps(self.to_json(), sort_keys=True)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self.json_text() == other.json_text()

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.json_text()))


# --------------------------------------------------------------------------- the selection


@dataclasses.dataclass(frozen=True, eq=False, kw_only=True)
class ScoredCandidate(Record):
    """One retrained candidate architecture of a selection (or ablation) batch.

    name   the candidate ("none", "evidence", "all"; an ablation's "only:<edge>", "drop:<edge>")
    edges  how many candidate edges its mask switches on
    score  its validation score by the selection's criterion (ctcvr_auc: an AUC in [0, 1],
           higher is better); NaN when it could not be computed (never chosen)
    """

    KIND: ClassVar[str] = "selection candidate"
    name: str
    edges: int
    score: float


@dataclasses.dataclass(frozen=True, eq=False, kw_only=True)
class Comparison(Record):
    """One paired comparison of the selection's rule: may `candidate` (more edges) replace
    `against` (the current choice)?

    diff        AUC(candidate) - AUC(against) on the same validation rows (AUC points, in
                [-1, 1]); NaN when a label class has under 2 rows
    se          DeLong's standard error of diff (AUC points)
    p           one-sided p-value of "candidate ranks better than against"
    level       the level p must clear: alpha / (finite candidates - 1)
    detectable  the true difference (AUC points) the comparison sees at 80% power; None
                where se is undefined
    wins        whether the candidate replaced the choice (p < level and a higher score)
    """

    KIND: ClassVar[str] = "comparison"
    candidate: str
    against: str
    diff: float
    se: float
    p: float
    level: float
    detectable: float | None = None
    wins: bool


@dataclasses.dataclass(frozen=True, eq=False, kw_only=True)
class Selection(Record):
    """A validated selection (search/selection.py `judge`): the masked search's last step, or
    the ablation search's whole decision.

    criterion    the validation score ("ctcvr_auc" or "cvr_auc")
    test         the paired test, in words
    alpha        its one-sided level before Bonferroni
    positives    the validation rows with a positive last-stage label (what the AUC rests on)
    candidates   each retrained candidate with its score, fewest edges first
    comparisons  the comparisons made, in order
    chosen       the chosen candidate's name
    """

    KIND: ClassVar[str] = "selection"
    NESTED: ClassVar[dict[str, tuple[type[Record], str]]] = {
        "candidates": (ScoredCandidate, "many"),
        "comparisons": (Comparison, "many"),
    }
    criterion: str
    test: str
    alpha: float
    positives: int
    candidates: tuple[ScoredCandidate, ...]
    comparisons: tuple[Comparison, ...]
    chosen: str

    def __post_init__(self) -> None:
        super().__post_init__()
        names = [c.name for c in self.candidates]
        if self.chosen not in names:
            raise ValueError(f"chosen {self.chosen!r} is not a candidate ({names})")


# --------------------------------------------------------------------------- the evidence


@dataclasses.dataclass(frozen=True, eq=False, kw_only=True)
class CommonMode(Record):
    """How much of one criterion's per-edge evidence is a shared calibration effect
    (evidence.common_mode).

    same_sign       every edge's z has one sign
    intercept_corr  correlation over edges of the mean contrasts with those of a pure intercept
                    shift of the same size (1: the criterion sees calibration only); None when
                    either is constant
    z               [E] each edge's z under the criterion
    """

    KIND: ClassVar[str] = "common mode"
    same_sign: bool
    intercept_corr: float | None
    z: tuple[float, ...]


@dataclasses.dataclass(frozen=True, eq=False, kw_only=True)
class EdgeEvidence(Record):
    """One edge's paired on/off contrast (search/evidence.py); written as its candidate's
    "evidence".

    mean          mean over validation batches of the criterion's loss with the edge off minus
                  on (nats per row; > 0: the edge lowers the loss); None when no edge could be
                  judged (too few validation rows)
    ci_lo, ci_hi  95% t-interval of mean (nats per row); None with mean
    z             mean / its standard error (a t over the batches); 0 when not judged
    decision      "kept" (z > threshold), "dropped" (z < -threshold) or "undecided"
    """

    KIND: ClassVar[str] = "edge evidence"
    mean: float | None
    ci_lo: float | None
    ci_hi: float | None
    z: float
    decision: str


@dataclasses.dataclass(frozen=True, eq=False, kw_only=True)
class Evidence(Record):
    """The masked search's settings and summary (architecture.json's "evidence"); the per-edge
    contrasts are the candidates' EdgeEvidence.

    criterion       the loss the contrasts compare (config EVIDENCE_CRITERIA)
    threshold       the |z| an edge must exceed to be decided
    threshold_rule  how threshold was set ("set", or the t quantile in words); absent when no
                    edge could be judged
    batches         validation batches the contrasts average over (0: none could be judged)
    contexts        context masks of the other edges per contrast
    undecided_rule  what an undecided edge becomes: "keep" or "drop"
    common_mode     per criterion of EVIDENCE_CRITERIA, its CommonMode ({} when not judged)
    note            why no edge could be judged (absent otherwise)
    selection       the validated selection over the retrained candidates (absent when
                    edge_search.select=off or nothing was judged)
    """

    KIND: ClassVar[str] = "evidence"
    NESTED: ClassVar[dict[str, tuple[type[Record], str]]] = {
        "common_mode": (CommonMode, "mapping"),
        "selection": (Selection, "one"),
    }
    criterion: str
    threshold: float
    threshold_rule: str | None = None
    batches: int
    contexts: int
    undecided_rule: str
    common_mode: dict[str, CommonMode]
    note: str | None = None
    selection: Selection | None = None


# --------------------------------------------------------------------------- the architecture


@dataclasses.dataclass(frozen=True, eq=False, kw_only=True)
class EdgeAblation(Record):
    """One edge's figures in the ablation search (validation AUC points, by its criterion):

    add_one   the edge alone minus no edge
    drop_one  every edge minus every edge but it; None when the batch trained no drop-one
              lanes (edge_search.drop_one=false)
    """

    KIND: ClassVar[str] = "edge ablation"
    add_one: float
    drop_one: float | None


@dataclasses.dataclass(frozen=True, eq=False, kw_only=True)
class CandidateEdge(Record):
    """One candidate edge of the search and what became of it.

    edge         its name "u.i->d.j" (docs/outputs.md)
    description  the same in words, with the task names
    prob         the learned gate's probability in [0, 1] (an evolved mask: 1.0 or 0.0); None
                 for the masked and ablation searches (no gate is learned)
    logit        the gate's logit; None where no gate was learned (also evolution)
    kept         whether the derived architecture has it
    op, op_probs an operator search's argmax operator and {operator: probability}
    evidence     masked search: the edge's EdgeEvidence
    decided_by   masked search: "evidence" or "selection", the step that decided the edge
    why          masked search: that decision in words
    ablation     ablation search: the edge's EdgeAblation
    """

    KIND: ClassVar[str] = "candidate edge"
    NESTED: ClassVar[dict[str, tuple[type[Record], str]]] = {
        "evidence": (EdgeEvidence, "one"),
        "ablation": (EdgeAblation, "one"),
    }
    edge: str
    description: str
    prob: float | None
    logit: float | None
    kept: bool
    op: str | None = None
    op_probs: dict[str, float] | None = None
    evidence: EdgeEvidence | None = None
    decided_by: str | None = None
    why: str | None = None
    ablation: EdgeAblation | None = None


@dataclasses.dataclass(frozen=True, eq=False, kw_only=True)
class ArchitectureRecord(Record):
    """The derived architecture (architecture.json; results.json's "architecture").

    search_mode    the supernet's edge mode ("hierarchical", ...), or "evolution"
    search_method  "masked", "gradient", "paper" or "ablation"; absent in an evolved record
    threshold      masked: the evidence's |z| threshold; gradient, paper, evolution: the
                   probability an edge must exceed; ablation: None
    task_names     the funnel's stage names, in order
    candidates     [E] every candidate edge, in the supernet's edge order
    kept           the kept edges' names, in candidate order
    kept_ops       each kept edge's operator (an operator search only)
    evidence       masked search: its Evidence
    ablation       ablation search: the Selection over the 2 + 2E retrained architectures
    """

    KIND: ClassVar[str] = "architecture record"
    NESTED: ClassVar[dict[str, tuple[type[Record], str]]] = {
        "candidates": (CandidateEdge, "many"),
        "evidence": (Evidence, "one"),
        "ablation": (Selection, "one"),
    }
    search_mode: str
    search_method: str | None = None
    threshold: float | None
    task_names: tuple[str, ...]
    candidates: tuple[CandidateEdge, ...]
    kept: tuple[str, ...]
    kept_ops: tuple[str, ...] | None = None
    evidence: Evidence | None = None
    ablation: Selection | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        flagged = tuple(c.edge for c in self.candidates if c.kept)
        if self.candidates and flagged != self.kept:
            raise ValueError(f"kept {list(self.kept)} is not the kept candidates {list(flagged)}")
        if self.kept_ops is not None and len(self.kept_ops) != len(self.kept):
            raise ValueError(f"{len(self.kept_ops)} kept_ops for {len(self.kept)} kept edges")

    @property
    def method(self) -> str:
        """search_method, or "evolution" for an evolved record (which has none)."""
        return self.search_method or "evolution"

    def kept_edges(self) -> list[Edge]:
        return [parse_edge(e) for e in self.kept]

    def candidate_edges(self) -> list[Edge]:
        return [parse_edge(c.edge) for c in self.candidates]
