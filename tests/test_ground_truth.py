"""experiments/ground_truth.py: a world-seed stopped midway resumes from its checkpoints and
writes the record an unbroken run writes."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from autoheri_jax.config import load_config
from autoheri_jax.study import Study
from autoheri_jax.workdir_format import stamp
from tests.helpers import StopTraining, load_script, stop_at

TINY_WORLD = [
    "data.num_users=100",
    "data.num_items=150",
    "data.num_train=1600",
    "data.num_valid=400",
    "data.num_test=800",
    "data.click_rate=0.3",
    "data.stage_rates=[0.2]",
    "model.hidden=[8,4]",
    "model.embed_dim=4",
    "retrain.batch_size=200",
    "retrain.log_every=2",
    "checkpoint.every_steps=2",
    "checkpoint.keep=10",
]


def test_a_stopped_world_seed_resumes_to_the_unbroken_record(repo, tmp_path, monkeypatch):
    gt = load_script(repo / "experiments" / "ground_truth.py")
    base = load_config(repo / "experiments" / "configs" / "study_base.py", TINY_WORLD)
    study = Study(name="gt", base=base, arms={"transfer": []}, seed_modes=("data",))
    whole = gt.world_seed(study, "transfer", 0, False, checkpoints=tmp_path / "whole")

    real = gt.train_architectures

    def crashing(spec, cfg, data, masks, *, desc, progress, resumable):
        hooks = [stop_at(6)] + [None] * (len(masks) - 1)
        return real(
            spec, cfg, data, masks, desc=desc, progress=progress, on_log=hooks, resumable=resumable
        )

    monkeypatch.setattr(gt, "train_architectures", crashing)
    with pytest.raises(StopTraining):
        gt.world_seed(study, "transfer", 0, False, checkpoints=tmp_path / "broken")
    assert any((tmp_path / "broken").iterdir())
    monkeypatch.setattr(gt, "train_architectures", real)
    again = gt.world_seed(study, "transfer", 0, False, checkpoints=tmp_path / "broken")

    assert again["train"]["resumed_at"] == 4 and not whole["train"].get("resumed_at")
    assert again["names"] == whole["names"] and again["masks"] == whole["masks"]
    assert again["test"] == whole["test"]  # every architecture's test sAUC, bitwise
    assert again["valid"] == whole["valid"]


# ------------------------------------------------------------ summaries on a hand-made record

EDGES = ["0.0->1.0", "0.1->1.0", "0.1->1.1"]
NAMES = ["none", "all", *(f"only:{e}" for e in EDGES), *(f"drop:{e}" for e in EDGES)]


def _record(seed: int, test: list[float], valid: list[float]) -> dict:
    """A world-seed record of 8 architectures; every validation criterion gets `valid`
    (higher-is-better criteria as given, losses negated)."""
    crit = {
        "raw_nll": False,
        "recal_nll": False,
        "recal_cvr_nll": False,
        "ips_cvr_nll": False,
        "ctcvr_auc": True,
        "cvr_auc": True,
    }
    return {
        "seed": seed,
        "names": NAMES,
        "edges": EDGES,
        "test": {"cvr_soft_auc_all": test},
        "valid": {c: [v if up else -v for v in valid] for c, up in crit.items()},
    }


def test_summary_add_one_drop_one_tau_and_best_on_validation_by_hand(repo):
    gt = load_script(repo / "experiments" / "ground_truth.py")
    #            none  all  only0 only1 only2 drop0 drop1 drop2
    tests = [[0.60, 0.63, 0.64, 0.61, 0.60, 0.61, 0.63, 0.63],
             [0.61, 0.63, 0.66, 0.61, 0.61, 0.62, 0.63, 0.64],
             [0.59, 0.62, 0.63, 0.60, 0.58, 0.60, 0.62, 0.62]]  # fmt: skip
    recs = [_record(k, t, t) for k, t in enumerate(tests)]  # validation orders as test does
    out = gt.summarize({"w": recs}, "ctcvr_auc", None)["w"]
    add0 = out["per_edge"]["0.0->1.0"]["add_one"]
    assert add0["mean_diff"] == pytest.approx((0.04 + 0.05 + 0.04) / 3)
    drop0 = out["per_edge"]["0.0->1.0"]["drop_one"]
    assert drop0["mean_diff"] == pytest.approx((0.02 + 0.01 + 0.02) / 3)
    assert out["all_minus_none"]["mean_diff"] == pytest.approx((0.03 + 0.02 + 0.03) / 3)
    assert out["criteria_tau"]["ctcvr_auc"]["mean_diff"] == pytest.approx(1.0)  # same order
    assert out["criteria_tau"]["raw_nll"]["mean_diff"] == pytest.approx(1.0)  # losses negated
    assert out["best_on_valid"]["ctcvr_auc"]["picked"] == ["only:0.0->1.0"] * 3
    assert out["best_on_test"] == ["only:0.0->1.0"] * 3
    # a criterion that orders the architectures backwards has tau -1
    flipped = [_record(k, t, [-v for v in t]) for k, t in enumerate(tests)]
    back = gt.summarize({"w": flipped}, "ctcvr_auc", None)["w"]["criteria_tau"]["ctcvr_auc"]
    assert back["mean_diff"] == pytest.approx(-1.0)


def test_a_batch_without_drop_one_architectures_summarizes_and_renders_add_one(repo, tmp_path):
    gt = load_script(repo / "experiments" / "ground_truth.py")
    tests = [
        [0.60, 0.63, 0.64, 0.61, 0.60],
        [0.61, 0.63, 0.66, 0.61, 0.61],
        [0.59, 0.62, 0.63, 0.60, 0.58],
    ]
    recs = [{**_record(k, t, t), "names": NAMES[:5]} for k, t in enumerate(tests)]
    out = gt.summarize({"w": recs}, "ctcvr_auc", None, {"w": ["0.0->1.0"]})
    w = out["w"]
    assert w["architectures"] == 5
    assert w["per_edge"]["0.1->1.0"]["drop_one"] == {}
    assert w["per_edge"]["0.0->1.0"]["add_one"]["mean_diff"] == pytest.approx(0.13 / 3)
    assert w["instrument"]["best"] == "0.0->1.0"
    text = gt.render(out, 3)
    assert "5 architectures" in text and "| 0.0->1.0 | +0.0433" in text and "n/a |" in text
    gt.figure(out, tmp_path / "gt.png")
    assert (tmp_path / "gt.png").stat().st_size > 0


def test_regret_is_best_on_validation_minus_the_derived_model(repo, tmp_path):
    import json

    from autoheri_jax.study import run_dir

    gt = load_script(repo / "experiments" / "ground_truth.py")
    tests = [[0.60, 0.63, 0.64, 0.61, 0.60, 0.61, 0.63, 0.63]] * 2
    valid = [0.1, 0.2, 0.15, 0.0, 0.0, 0.0, 0.0, 0.0]  # validation picks "all" (0.63)
    recs = [_record(k, t, valid) for k, t in enumerate(tests)]
    for k, derived in enumerate((0.625, 0.600)):
        d = run_dir(tmp_path, "w", k, "data")
        d.mkdir(parents=True)
        models = {
            "autoheri": {"test": {"cvr": {"soft_auc_all": derived}}, "edges": ["x"] * k},
            "esmm": {"test": {"cvr": {"soft_auc_all": 0.6001}}},
        }
        (d / "results.json").write_text(json.dumps(stamp({"models": models})))
    r = gt.summarize({"w": recs}, "ctcvr_auc", tmp_path)["w"]["regret"]
    assert r["n"] == 2 and r["kept"] == [0, 1]
    assert r["best_on_valid_minus_derived"]["mean_diff"] == pytest.approx((0.005 + 0.03) / 2)
    assert r["best_on_test_minus_derived"]["mean_diff"] == pytest.approx((0.015 + 0.04) / 2)
    assert r["max_abs_esmm_vs_none"] == pytest.approx(0.0001)


def test_the_instrument_criterion_accepts_a_separated_planted_edge_and_refuses_a_tie(repo):
    gt = load_script(repo / "experiments" / "ground_truth.py")
    rng = np.random.default_rng(0)
    none = 0.6 + 0.01 * rng.normal(size=10)
    col = {"none": none, "all": none + 0.01}
    for k, e in enumerate(EDGES):
        col[f"only:{e}"] = none + [0.02, 0.005, 0.004][k] + 0.001 * rng.normal(size=10)
    ok = gt.instrument_check(col, EDGES, ["0.0->1.0"])
    assert ok["works"] and ok["best"] == "0.0->1.0" and set(ok["versus"]) == set(EDGES[1:])
    # outside the verdict: the planted edge alone - the others alone, and against all on
    rest = (col["only:0.1->1.0"] + col["only:0.1->1.1"]) / 2
    assert ok["mean_expected_minus_mean_rest"]["mean_diff"] == pytest.approx(
        float(np.mean(col["only:0.0->1.0"] - rest))
    )
    assert ok["seeds_every_expected_beats_every_rest"] == 10 and ok["seeds"] == 10
    assert ok["best_minus_all"]["mean_diff"] == pytest.approx(0.01, abs=0.001)
    assert ok["rest_minus_all"]["0.1->1.1"]["ci_hi"] < 0  # +0.004 alone against +0.01 all on
    lines = "\n".join(gt._instrument_lines(ok))
    assert "every expected edge above every other in 10 of 10 seeds" in lines
    # the same world judged with the wrong expected edge fails
    assert not gt.instrument_check(col, EDGES, ["0.1->1.1"])["works"]
    # a tie between the planted edge and another: no separation, the world fails
    col["only:0.1->1.0"] = col["only:0.0->1.0"] + 0.0005 * rng.normal(size=10)
    assert not gt.instrument_check(col, EDGES, ["0.0->1.0"])["works"]
    # null: works while no edge's add-one is above 0
    flat = {"none": none, "all": none - 0.01, **{f"only:{e}": none - 0.005 for e in EDGES}}
    assert gt.instrument_check(flat, EDGES, [])["works"]
    flat["only:0.1->1.1"] = none + 0.01 + 0.001 * rng.normal(size=10)
    assert not gt.instrument_check(flat, EDGES, [])["works"]
    assert gt.instrument_check(col, EDGES, None) is None  # cascade: no planted answer


def test_expected_sets_follow_the_world_designs(repo):
    gt = load_script(repo / "experiments" / "ground_truth.py")
    edges = [f"0.{i}->1.{j}" for i in range(3) for j in range(3)]
    data = load_config(repo / "experiments" / "configs" / "study_base.py").data
    at = lambda **kw: gt.expected_set(dataclasses.replace(data, **kw), edges)
    assert at(world="cascade") is None and at(world="null") == []
    assert at(world="shallow") == [e for e in edges if e[2] in "01"]
    assert at(world="deep") == ["0.2->1.0", "0.2->1.1", "0.2->1.2"]
    assert at(world="planted", planted_edge="0->2") == ["0.0->1.0", "0.0->1.1", "0.0->1.2"]
    assert at(world="planted", planted_edge="2->0") == ["0.2->1.0"]
    assert at(world="planted", planted_edge="1->1") == ["0.0->1.0", "0.1->1.0", "0.1->1.1"]
    three = [
        f"{a}.{i}->{b}.{j}" for a, b in ((0, 1), (0, 2), (1, 2)) for i in range(2) for j in range(2)
    ]
    bypass = gt.expected_set(
        dataclasses.replace(data, world="bypass", num_stages=3, stage_rates=(0.2, 0.15)), three
    )
    assert bypass == ["0.0->2.0", "0.0->2.1", "0.1->2.0", "0.1->2.1"]
    # --expect deeper: the 4M-row hypothesis, the same set in every world
    deeper = [e for e in edges if not e.startswith("0.0")]
    for world in ("cascade", "deep", "shallow"):
        assert gt.expected_set(dataclasses.replace(data, world=world), edges, "deeper") == deeper


def test_layer_probe_measures_what_a_representation_holds(repo):
    """probe_r2 is a held-out R²: ~1 for a representation holding the quantity linearly (among
    dead and noisy units), ~0 for one that does not; never blown up by a unit dead on the
    fitting half only."""
    lp = load_script(repo / "experiments" / "layer_probe.py")
    rng = np.random.default_rng(0)
    q = rng.normal(size=4000)
    noise = rng.normal(size=(4000, 8))
    dead = np.zeros((4000, 1))
    dead[2000:] = 5.0 * rng.normal(size=(2000, 1))  # silent while fitting, loud when scored
    holds = np.c_[q + 0.05 * rng.normal(size=4000), noise, dead]
    assert lp.probe_r2(holds, q) > 0.95
    assert abs(lp.probe_r2(np.c_[noise, dead], q)) < 0.02
