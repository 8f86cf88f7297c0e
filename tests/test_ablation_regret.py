"""experiments/ablation_regret.py: the search's choice against a ground truth's picks, on a
hand-made record whose answers are known."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import load_script

AR = load_script(Path(__file__).resolve().parents[1] / "experiments" / "ablation_regret.py")
NAMES = ["none", "all", "only:0.0->1.0", "only:0.1->1.0"]


def _record(seed: int, valid: list[float], test: list[float]) -> dict:
    return {
        "seed": seed,
        "names": NAMES,
        "valid": {"cvr_auc": valid},
        "test": {"cvr_soft_auc_all": test},
    }


def test_regret_is_the_validation_picks_test_score_minus_the_chosen_lanes():
    rec = _record(7, valid=[0.60, 0.61, 0.64, 0.63], test=[0.50, 0.52, 0.53, 0.56])
    r = AR.compare(rec, "0.1->1.0", "cvr_auc")
    assert (r["chosen"], r["best_valid"], r["best_test"]) == (
        "only:0.1->1.0",
        "only:0.0->1.0",
        "only:0.1->1.0",
    )
    assert r["regret"] == pytest.approx(0.53 - 0.56)  # the margin's choice beat the pick
    assert r["chosen - none"] == pytest.approx(0.06) and r["chosen - all"] == pytest.approx(0.04)
    assert r["best test - chosen"] == 0
    assert AR.compare(rec, "none", "cvr_auc")["regret"] == pytest.approx(0.03)


def test_right_depth_needs_an_edge_and_none_from_click_layer_0():
    assert AR.right_depth("only:0.1->1.0") and AR.right_depth("all")
    assert not AR.right_depth("only:0.0->1.2") and not AR.right_depth("none")


def test_the_command_reads_each_seeds_record_and_names_a_missing_one(tmp_path, capsys):
    arm = tmp_path / "deep"
    arm.mkdir()
    for k, best in enumerate((2, 3)):
        valid = [0.6, 0.6, 0.6, 0.6]
        valid[best] = 0.7
        (arm / f"seed{10 + k}.json").write_text(
            json.dumps(_record(10 + k, valid, [0.5, 0.5, 0.55, 0.54]))
        )
    AR.main([str(tmp_path), "--arm", "deep", "--first-seed", "10", "--chosen", "0.0->1.0", "all"])
    out = capsys.readouterr().out
    assert "validation pick == chosen: 1/2; right depth: 1/2" in out
    assert "regret               +0.0200 [" in out  # (0 + 0.04) / 2
    with pytest.raises(SystemExit, match="seed12.json: no ground-truth record"):
        AR.main(
            [str(tmp_path), "--arm", "deep", "--first-seed", "10", "--chosen", "all", "all", "none"]
        )
