"""experiments/kept_depth.py on a hand-made study workdir: the right-depth rule, the exact
interval and the keep frequencies."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import load_script

KD = load_script(Path(__file__).resolve().parents[1] / "experiments" / "kept_depth.py")


def test_right_depth_needs_an_edge_and_no_source_below_the_layer():
    assert KD.right_depth(["0.1->1.0", "0.2->1.2"], 1)
    assert not KD.right_depth([], 1)  # keeping nothing is not finding the depth
    assert not KD.right_depth(["0.1->1.0", "0.0->1.2"], 1)  # one layer-0 source spoils it
    assert KD.right_depth(["0.0->1.2"], 0)


def test_clopper_pearson_matches_known_values():
    assert KD.clopper_pearson(10, 10) == pytest.approx((0.6915, 1.0), abs=1e-4)
    assert KD.clopper_pearson(0, 10) == pytest.approx((0.0, 0.3085), abs=1e-4)
    lo, hi = KD.clopper_pearson(5, 10)
    assert lo == pytest.approx(0.1871, abs=1e-4) and hi == pytest.approx(0.8129, abs=1e-4)


def test_summary_of_a_study_workdir(tmp_path, capsys):
    runs = {1000: ["0.1->1.0"], 1001: [], 1002: ["0.0->1.0", "0.2->1.1"], 1003: ["0.2->1.1"]}
    for seed, kept in runs.items():
        d = tmp_path / "transfer_masked" / f"dseed{seed}"
        d.mkdir(parents=True)
        (d / "results.json").write_text(json.dumps({"architecture": {"kept": kept}}))
    arch = {  # the evidence kept 0.2->1.1 in seed 1000, where the selection kept 0.1->1.0
        "evidence": {},
        "candidates": [
            {"edge": "0.1->1.0", "evidence": {"decision": "undecided"}},
            {"edge": "0.2->1.1", "evidence": {"decision": "kept"}},
        ],
    }
    (tmp_path / "transfer_masked" / "dseed1000" / "architecture.json").write_text(json.dumps(arch))
    (tmp_path / "transfer_masked" / "dseed1004").mkdir()  # unfinished: no results.json
    kept = KD.kept_by_seed(tmp_path / "transfer_masked")
    assert kept == runs
    s = KD.summarize(kept, 1)
    assert (s["runs"], s["right"], s["any_kept"]) == (4, 2, 3)
    assert s["kept_counts"] == [1, 0, 2, 1]
    mean, lo, hi = s["kept_mean_ci"]  # t(3) quantile 3.182, sd 0.8165 over 4 runs
    assert mean == 1.0 and hi - mean == pytest.approx(3.182 * 0.8165 / 2, abs=2e-3)
    assert lo == pytest.approx(2 * mean - hi)
    assert s["frequency"] == {"0.0->1.0": 0.25, "0.1->1.0": 0.25, "0.2->1.1": 0.5}
    assert KD.evidence_by_seed(tmp_path / "transfer_masked") == {1000: ["0.2->1.1"]}
    KD.main([str(tmp_path)])
    out = capsys.readouterr().out
    assert "right depth (>= 1 edge, sources >= layer 1): 2/4" in out
    assert "seed 1002: 2 kept ['0.0->1.0', '0.2->1.1'] [-]" in out
    assert "evidence alone: right depth 1/1" in out


def test_the_ablation_searchs_comparisons_are_printed_per_seed(tmp_path, capsys):
    d = tmp_path / "deep_ablation" / "dseed1010"
    d.mkdir(parents=True)
    (d / "results.json").write_text(json.dumps({"architecture": {"kept": ["0.1->1.0"]}}))
    keys = ("candidate", "against", "diff", "se", "p", "level", "wins")
    rows = [
        ("only:0.1->1.0", "none", 0.0073, 0.001, 5.7e-13, 0.005, True),
        ("all", "only:0.1->1.0", -0.0025, 0.0011, 0.98, 0.005, False),
    ]
    made = [dict(zip(keys, row, strict=True)) for row in rows]
    (d / "architecture.json").write_text(json.dumps({"ablation": {"comparisons": made}}))
    assert KD.comparisons_by_seed(tmp_path / "deep_ablation") == {1010: made}
    KD.main([str(tmp_path)])
    out = capsys.readouterr().out
    assert (
        "seed 1010 on validation: only:0.1->1.0 - none +0.0073 (se 0.0010, p 5.7e-13 against "
        "0.005: wins); all - only:0.1->1.0 -0.0025 (se 0.0011, p 0.98 against 0.005: refused)"
    ) in out


def test_settled_step_is_where_every_gate_last_crossed_to_its_final_side():
    history = [
        {"step": 50, "probs": {"a": 0.6, "b": 0.4}},
        {"step": 100, "probs": {"a": 0.4, "b": 0.3}},  # a crosses back: not settled yet
        {"step": 150, "probs": {"a": 0.7, "b": 0.2}},
        {"step": 200, "probs": {"a": 0.9, "b": 0.1}},
    ]
    assert KD.settled_step(history) == 150
    assert KD.settled_step(history[2:]) == 150
    assert KD.settled_step([]) is None
    warmup = [{"step": 50, "probs": {"a": 0.5, "b": 0.5}}, *history[2:]]  # held at 0.5
    assert KD.settled_step(warmup) == 150
    assert KD.settled_step([{"step": 50, "probs": {"a": 0.5}}]) is None
