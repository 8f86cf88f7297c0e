"""The search's records as types (search/records.py): exact JSON round trips, NaN included,
and refusals that name the key and the file."""

import json
import math

import numpy as np
import pytest

from autoheri_jax.search.records import (
    ArchitectureRecord,
    CandidateEdge,
    CommonMode,
    Comparison,
    EdgeAblation,
    EdgeEvidence,
    Evidence,
    RecordError,
    ScoredCandidate,
    Selection,
)


def _selection(score=0.1 + 0.2, nan=False) -> Selection:
    return Selection(
        criterion="ctcvr_auc",
        test="DeLong paired AUC test, one-sided, Bonferroni over the candidates",
        alpha=0.05,
        positives=np.int64(412),
        candidates=[
            ScoredCandidate(name="none", edges=0, score=np.float64(0.6123456789012345)),
            ScoredCandidate(name="all", edges=4, score=math.nan if nan else score),
        ],
        comparisons=[
            Comparison(
                candidate="all",
                against="none",
                diff=math.nan if nan else 1e-17,
                se=0.0123,
                p=0.2,
                level=0.05,
                detectable=0.031,
                wins=np.bool_(False),
            )
        ],
        chosen="none",
    )


def _evidence(selection=True) -> Evidence:
    return Evidence(
        criterion="recal_ips_cvr_nll",
        threshold=np.float64(2.7764451051977987),
        threshold_rule="t quantile 1 - 0.05 / 4 edges, 7 df",
        batches=8,
        contexts=16,
        undecided_rule="drop",
        common_mode={
            "raw_nll": CommonMode(same_sign=True, intercept_corr=0.99, z=np.array([1.0, 2.5])),
            "ips_cvr_nll": CommonMode(same_sign=False, intercept_corr=None, z=[-0.5, 3.0]),
        },
        selection=_selection() if selection else None,
    )


def _masked() -> ArchitectureRecord:
    ev = [
        EdgeEvidence(mean=3e-5, ci_lo=-1e-5, ci_hi=7e-5, z=3.1, decision="kept"),
        EdgeEvidence(mean=None, ci_lo=None, ci_hi=None, z=0.0, decision="undecided"),
    ]
    cands = [
        CandidateEdge(
            edge=e,
            description=f"edge {e}",
            prob=None,
            logit=None,
            kept=k,
            evidence=v,
            decided_by="evidence",
            why="evidence kept",
        )
        for e, k, v in (("0.0->1.0", True, ev[0]), ("0.1->1.1", False, ev[1]))
    ]
    return ArchitectureRecord(
        search_mode="hierarchical",
        search_method="masked",
        threshold=2.7764451051977987,
        task_names=["ctr", "cvr"],
        candidates=cands,
        kept=["0.0->1.0"],
        evidence=_evidence(),
    )


def _gradient() -> ArchitectureRecord:
    cands = [
        CandidateEdge(
            edge="0.0->1.0",
            description="d",
            prob=np.float32(0.7),
            logit=0.8473,
            kept=True,
            op="gated_sum",
            op_probs={"concat": 0.25, "gated_sum": 0.75},
        ),
        CandidateEdge(
            edge="0.1->1.0",
            description="d",
            prob=0.2,
            logit=-1.386,
            kept=False,
            op="concat",
            op_probs={"concat": 0.6, "gated_sum": 0.4},
        ),
    ]
    return ArchitectureRecord(
        search_mode="hierarchical",
        search_method="gradient",
        threshold=0.5,
        task_names=("ctr", "cvr"),
        candidates=cands,
        kept=("0.0->1.0",),
        kept_ops=("gated_sum",),
    )


def _ablation() -> ArchitectureRecord:
    cands = [
        CandidateEdge(
            edge="0.0->1.0",
            description="d",
            prob=None,
            logit=None,
            kept=False,
            ablation=EdgeAblation(add_one=-0.001, drop_one=0.002),
        )
    ]
    return ArchitectureRecord(
        search_mode="hierarchical",
        search_method="ablation",
        threshold=None,
        task_names=("ctr", "cvr"),
        candidates=cands,
        kept=(),
        ablation=_selection(nan=True),
    )


def _evolved() -> ArchitectureRecord:  # no search_method: an evolved record
    cands = [CandidateEdge(edge="0.0->1.0", description="d", prob=1.0, logit=None, kept=True)]
    return ArchitectureRecord(
        search_mode="evolution",
        threshold=0.5,
        task_names=("a", "b"),
        candidates=cands,
        kept=("0.0->1.0",),
    )


RECORDS = {
    "masked": _masked,
    "gradient": _gradient,
    "ablation": _ablation,
    "evolved": _evolved,
    "selection": _selection,
    "selection_nan": lambda: _selection(nan=True),
    "evidence": _evidence,
    "evidence_without_selection": lambda: _evidence(selection=False),
}


@pytest.mark.parametrize("name", sorted(RECORDS))
def test_each_record_round_trips_exactly_through_the_json_text(name):
    record = RECORDS[name]()
    text = json.dumps(record.to_json(), indent=2)  # what Workdir.write_json writes
    back = type(record).from_json(json.loads(text), source="x.json")
    assert back == record and hash(back) == hash(record)
    assert json.dumps(back.to_json(), indent=2) == text  # the same bytes, key order included
    assert type(record).from_json(back.to_json()).to_json() == json.loads(text) or "NaN" in text


def test_floats_come_back_bit_for_bit_and_nan_stays_nan():
    sel = Selection.from_json(json.loads(json.dumps(_selection(nan=True).to_json())))
    assert math.isnan(sel.candidates[1].score) and math.isnan(sel.comparisons[0].diff)
    assert sel.candidates[0].score == 0.6123456789012345
    exact = Selection.from_json(json.loads(json.dumps(_selection(score=0.1 + 0.2).to_json())))
    assert exact.candidates[1].score == 0.1 + 0.2 and exact.comparisons[0].diff == 1e-17
    assert _selection(nan=True) != _selection()  # NaN is a value, not a wildcard
    # numpy values become JSON's own types when the record is built
    g = _gradient()
    assert type(g.candidates[0].prob) is float and g.candidates[0].prob == float(np.float32(0.7))
    assert type(_selection().positives) is int and type(_selection().comparisons[0].wins) is bool


def test_the_written_layout_is_the_documented_one():
    m = _masked().to_json()
    assert list(m) == [
        "search_mode",
        "search_method",
        "threshold",
        "task_names",
        "candidates",
        "kept",
        "evidence",
    ]
    assert set(m["candidates"][0]) == {
        "edge",
        "description",
        "prob",
        "logit",
        "kept",
        "evidence",
        "decided_by",
        "why",
    }
    assert "selection" in m["evidence"] and "note" not in m["evidence"]
    assert m["evidence"]["common_mode"]["ips_cvr_nll"]["intercept_corr"] is None
    assert set(_gradient().to_json()) == {
        "search_mode",
        "search_method",
        "threshold",
        "task_names",
        "candidates",
        "kept",
        "kept_ops",
    }
    assert "search_method" not in _evolved().to_json()
    assert set(_ablation().to_json()["ablation"]) == {
        "criterion",
        "test",
        "alpha",
        "positives",
        "candidates",
        "comparisons",
        "chosen",
    }


@pytest.mark.parametrize(
    "path, key",
    [
        ((), "search_mode"),
        (("evidence",), "batches"),
        (("evidence", "selection"), "chosen"),
        (("evidence", "selection", "comparisons", 0), "se"),
        (("candidates", 1, "evidence"), "z"),
    ],
)
def test_a_missing_key_is_refused_naming_the_key_where_it_sits_and_the_file(path, key):
    obj = _masked().to_json()
    inner = obj
    for p in path:
        inner = inner[p]
    del inner[key]
    with pytest.raises(RecordError, match=rf"arch\.json: missing key '{key}'") as e:
        ArchitectureRecord.from_json(obj, source="arch.json")
    where = ".".join(str(p) for p in path).replace(".0", "[0]").replace(".1", "[1]")
    assert (f" at {where}" in str(e.value)) if path else " at " not in str(e.value)


@pytest.mark.parametrize(
    "path", [(), ("evidence",), ("evidence", "selection", "candidates", 0), ("candidates", 0)]
)
def test_an_unknown_key_is_refused_naming_it_and_the_file(path):
    obj = _masked().to_json()
    inner = obj
    for p in path:
        inner = inner[p]
    inner["surprise"] = 1
    with pytest.raises(RecordError, match=r"results\.json: unknown key 'surprise'"):
        ArchitectureRecord.from_json(obj, source="results.json")


def test_optional_keys_may_be_absent_and_inconsistent_records_are_refused():
    obj = _masked().to_json()
    del obj["evidence"]["selection"]  # select=off: no selection
    assert ArchitectureRecord.from_json(obj).evidence.selection is None
    del obj["evidence"]["threshold_rule"]  # a split too small to judge states none
    assert ArchitectureRecord.from_json(obj).evidence.threshold_rule is None
    obj["kept"] = []  # the kept list must be the kept candidates
    with pytest.raises(RecordError, match=r"a\.json: the architecture record is inconsistent"):
        ArchitectureRecord.from_json(obj, source="a.json")
    sel = _selection().to_json()
    sel["chosen"] = "evidence"
    with pytest.raises(RecordError, match="chosen 'evidence' is not a candidate"):
        Selection.from_json(sel, source="s.json")
    with pytest.raises(RecordError, match=r"s\.json: the selection is list"):
        Selection.from_json([], source="s.json")
