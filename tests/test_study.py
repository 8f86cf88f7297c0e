import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from autoheri_jax import phases
from autoheri_jax import study as study_mod
from autoheri_jax.config import Config, ConfigError
from autoheri_jax.study import (
    Study,
    arm_config,
    load_study,
    mean_std,
    paired_test,
    run_dir,
    t_two_sided_p,
    write_summary,
)
from autoheri_jax.workdir_format import stamp
from tests import background

# A seconds-long run: 4 train steps per model, one checkpoint at the end.
TINY = [
    "baselines=esmm",
    "data.num_train=1024",
    "checkpoint.every_steps=1000",
    "checkpoint.keep_best=false",
    "checkpoint.async_save=false",
]
STUDIES = sorted((Path(__file__).resolve().parents[1] / "experiments" / "studies").glob("*.py"))


def test_t_test_p_values_match_known_values():
    assert t_two_sided_p(2.776, 4) == pytest.approx(0.05, abs=2e-4)  # t_{0.975, 4} = 2.7764
    assert t_two_sided_p(12.706, 1) == pytest.approx(0.05, abs=2e-4)
    assert t_two_sided_p(2.228, 10) == pytest.approx(0.05, abs=2e-4)
    assert t_two_sided_p(1.96, 1e7) == pytest.approx(0.05, abs=1e-3)  # -> the normal
    assert t_two_sided_p(0.0, 4) == 1.0
    assert t_two_sided_p(-2.776, 4) == t_two_sided_p(2.776, 4)
    assert t_two_sided_p(math.inf, 3) == 0.0
    for t in (0.1, 0.7, 1.5, 3.0, 40.0):  # closed forms for df = 1 (Cauchy) and df = 2
        assert t_two_sided_p(t, 1) == pytest.approx(1 - 2 * math.atan(t) / math.pi, rel=1e-10)
        assert t_two_sided_p(t, 2) == pytest.approx(1 - t / math.sqrt(2 + t * t), rel=1e-10)


def test_paired_test_agrees_with_scipy_ttest_rel():
    a, b = [0.71, 0.72, 0.70, 0.74, 0.69], [0.70, 0.70, 0.69, 0.71, 0.70]
    ref = stats.ttest_rel(a, b)
    got = paired_test(a, b)
    assert got["t"] == pytest.approx(ref.statistic, rel=1e-12)
    assert got["p"] == pytest.approx(ref.pvalue, rel=1e-12)
    ci = ref.confidence_interval(0.95)
    assert (got["ci_lo"], got["ci_hi"]) == pytest.approx((ci.low, ci.high), rel=1e-12)


def test_paired_test_and_mean_std():
    a, b = [0.71, 0.72, 0.70, 0.74], [0.70, 0.70, 0.69, 0.71]
    d = np.subtract(a, b)
    t = paired_test(a, b)
    assert t["n"] == 4 and t["df"] == 3
    assert t["mean_diff"] == pytest.approx(d.mean())
    assert t["std_diff"] == pytest.approx(d.std(ddof=1))
    assert t["t"] == pytest.approx(d.mean() / (d.std(ddof=1) / 2))
    assert t["p"] == pytest.approx(t_two_sided_p(t["t"], 3))
    assert paired_test([0.5], [0.4])["t"] is None  # one pair: no spread, no test
    assert paired_test([0.5, 0.6], [0.4, 0.5])["p"] == 0.0  # constant non-zero difference
    assert paired_test([0.5, 0.6], [0.5, 0.6])["p"] == 1.0
    assert mean_std([0.1, None, 0.3]) == {
        "n": 2,
        "mean": pytest.approx(0.2),
        "std": pytest.approx(math.sqrt(0.02)),
    }
    assert mean_std([0.4])["std"] is None


def _fake_results(models: dict[str, float], oracle: float) -> dict:
    def test(v):
        return {
            k: {"auc": v + off, "nll": 0.1} for k, off in (("ctr", 0), ("cvr", 0.1), ("ctcvr", 0.2))
        }

    return {
        "metric_keys": ["ctr", "cvr", "ctcvr"],
        "models": {m: {"test": test(v)} for m, v in models.items()},
        "oracle": {"test": test(oracle)},
        "architecture": {"kept": ["0.0->1.0"]},
    }


def test_mean_std_table_and_paired_comparison_on_fake_results(tmp_path):
    s = Study(name="fake", base=Config(), arms={"x": [], "y": []}, seeds=3, arm_pairs=(("y", "x"),))
    auto = {"x": [0.60, 0.62, 0.61], "y": [0.63, 0.66, 0.64]}
    esmm = [0.59, 0.60, 0.60]
    for arm in ("x", "y"):
        for k in range(3):
            d = run_dir(tmp_path, arm, k)
            d.mkdir(parents=True)
            res = _fake_results({"autoheri": auto[arm][k], "esmm": esmm[k]}, 0.8)
            (d / "results.json").write_text(json.dumps(stamp(res)))
    summary = write_summary(s, tmp_path, 3, ("model",))
    body = summary["modes"]["model"]
    row = body["arms"]["x"]["models"]["autoheri"]["cvr"]
    assert row["n"] == 3 and row["mean"] == pytest.approx(np.mean(auto["x"]) + 0.1)
    assert row["std"] == pytest.approx(np.std(auto["x"], ddof=1))
    assert body["arms"]["x"]["models"]["oracle"]["ctr"]["mean"] == pytest.approx(0.8)
    test = body["arms"]["y"]["paired"]["autoheri"]["ctcvr"]
    ref = paired_test(auto["y"], esmm)
    assert test["mean_diff"] == pytest.approx(ref["mean_diff"]) and test["p"] == pytest.approx(
        ref["p"]
    )
    assert set(body["arms"]["x"]["paired"]) == {"autoheri"}  # neither esmm nor the oracle
    between = body["arm_pairs"][0]["tests"]["ctr"]
    assert between["mean_diff"] == pytest.approx(np.mean(np.subtract(auto["y"], auto["x"])))
    md = (tmp_path / "study.md").read_text()
    assert "| x | autoheri | 3 | 0.6100 ± 0.0100 |" in md and "| y − x | autoheri |" in md
    assert json.loads((tmp_path / "study.json").read_text())["keys"] == ["ctr", "cvr", "ctcvr"]


def test_study_definition_is_checked_before_compute():
    with pytest.raises(ConfigError, match="arms"):
        Study(name="s", base=Config(), arms={})
    with pytest.raises(ConfigError, match="methods"):
        Study(name="s", base=Config(), arms={"a": []}, methods={"a": "grid"})
    with pytest.raises(ConfigError, match="not a usable directory name"):
        Study(name="s", base=Config(), arms={"a/b": []})
    bad = Study(name="s", base=Config(), arms={"a": ["search.epoch=2"]})
    with pytest.raises(ConfigError, match=r"arm 'a'.*search\.epoch"):
        arm_config(bad, "a", 0)
    with pytest.raises(ConfigError, match="compare_to 'mmoe'"):
        arm_config(Study(name="s", base=Config(), arms={"a": []}, compare_to="mmoe"), "a", 0)
    cfg = arm_config(Study(name="s", base=Config(), arms={"a": []}), "a", 3, "data")
    assert (cfg.search.seed, cfg.retrain.seed, cfg.evolution.seed, cfg.data.seed) == (3, 3, 3, 3)
    assert arm_config(Study(name="s", base=Config(), arms={"a": []}), "a", 3).data.seed == 0


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.stem)
def test_every_study_file_loads_and_documents_its_command(path):
    s = load_study(path)
    for arm in s.arms:
        assert isinstance(arm_config(s, arm, 0), Config)
    doc = path.read_text().split('"""')[1]
    assert f"--config experiments/studies/{path.name}" in doc
    assert "Expected" in doc


@background.job
def tiny_study(tmp: Path) -> tuple[Path, Path, str]:
    """`autoheri study` of a 2-arm study of the smoke config, 2 seeds: -> (its definition,
    the workdir, what it printed)."""
    smoke = background.REPO / "experiments" / "configs" / "smoke.py"
    file = tmp / "tiny_study.py"
    file.write_text(
        "from autoheri_jax.config import load_config\n"
        "from autoheri_jax.study import Study\n\n\n"
        "def get_study():\n"
        f"    base = load_config({str(smoke)!r}, {TINY!r})\n"
        "    arms = {'weak': ['data.cascade_strength=0.0'],\n"
        "            'strong': ['data.cascade_strength=0.9']}\n"
        "    return Study(name='tiny', base=base, arms=arms, seeds=5)\n"
    )
    wd = tmp / "study"
    out = background.cli(
        "study", "--config", file, "--workdir", wd, "--seeds", "2", "--no-progress"
    )
    return file, wd, out.stdout


@pytest.mark.slow
@background.uses(tiny_study)  # the study runs as a background job (tests/background.py)
def test_tiny_study_runs_then_resumes_without_rerunning(repo, monkeypatch):
    monkeypatch.chdir(repo)
    file, wd, out = tiny_study.result()
    assert "[study] tiny: 4 runs done now, 0 found done" in out and "| strong | esmm | 2 |" in out
    for arm in ("weak", "strong"):
        for k in range(2):
            assert (wd / arm / f"seed{k}" / "results.json").is_file()
    summary = json.loads((wd / "study.json").read_text())
    test = summary["modes"]["model"]["arms"]["weak"]["paired"]["autoheri"]["cvr"]
    assert test["n"] == 2 and test["df"] == 1 and 0 <= test["p"] <= 1
    assert summary["modes"]["model"]["arms"]["strong"]["cost"]["steps"] == 4  # 1024 rows / 256
    assert (wd / "study.md").read_text().startswith("# Study tiny")
    # each run's time by phase, adding up to its wall time; the table shows the means
    timing = json.loads((wd / "weak" / "seed0" / study_mod.RUN_JSON).read_text())
    assert set(timing["phases"]) == set(phases.PHASES)
    assert sum(timing["phases"].values()) == pytest.approx(timing["seconds"], rel=0.02)
    assert min(timing["phases"][k] for k in ("data", "compile", "train", "evaluate")) > 0
    cost = summary["modes"]["model"]["arms"]["weak"]["cost"]["phases"]
    assert cost["train"] > 0 and "| weak | " + f"{cost['data']:.1f} | " in out

    def no_rerun(*a, **k):
        raise AssertionError("a finished run was run again")

    monkeypatch.setattr(study_mod, "run_one", no_rerun)
    again = study_mod.run_study(load_study(file), wd, seeds=2)
    assert again["ran"] == [] and len(again["skipped"]) == 4
    assert again["modes"] == summary["modes"]
    # A different definition in the same workdir is refused before any compute.
    other = study_mod.with_base_overrides(load_study(file), ["data.num_test=1024"])
    with pytest.raises(ConfigError, match="another definition"):
        study_mod.run_study(other, wd, seeds=2)
