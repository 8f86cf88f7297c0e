import json
from dataclasses import replace

import numpy as np
import pytest

from autoheri_jax import artifacts
from autoheri_jax.cli import main
from autoheri_jax.config import (
    Config,
    ConfigError,
    EvolutionConfig,
    SupernetConfig,
    apply_overrides,
    load_config,
)
from autoheri_jax.evolution_run import ONESHOT_RECORD, _install_architecture
from autoheri_jax.experiment import load_data
from autoheri_jax.model.edges import candidate_edges
from autoheri_jax.search import architecture
from autoheri_jax.search.evolution import (
    aging_evolution,
    budget_train_config,
    budget_train_rows,
    mutate,
)

SMOKE = "experiments/configs/smoke.py"


def _additive_scorer(weights):
    calls = []

    def score(mask):
        calls.append(mask)
        return float(np.dot(weights, mask)), {"steps": 10}

    return score, calls


def test_aging_evolution_finds_the_optimum_of_a_synthetic_score_deterministically():
    weights = np.array([0.3, -0.2, 0.5, -0.1, 0.05, 0.2, -0.4, 0.1, -0.05])
    optimum = tuple(int(w > 0) for w in weights)
    cfg = EvolutionConfig(population=10, sample=3, cycles=120, seed=3)
    score, calls = _additive_scorer(weights)
    result = aging_evolution(len(weights), score, cfg)
    assert len(calls) == len(set(calls)) < 2 ** len(weights)  # cached, not exhaustive
    assert result.best.mask == optimum
    assert result.best.score == pytest.approx(float(weights[weights > 0].sum()))
    assert len(result.history) == cfg.population + cfg.cycles
    again = aging_evolution(len(weights), _additive_scorer(weights)[0], cfg)
    assert [e.mask for e in again.history] == [e.mask for e in result.history]
    other = aging_evolution(len(weights), _additive_scorer(weights)[0], replace(cfg, seed=4))
    assert [e.mask for e in other.history] != [e.mask for e in result.history]


def test_mutation_always_flips_at_least_one_edge():
    rng = np.random.default_rng(0)
    parent = (1, 0, 1, 1, 0)
    for prob in (0.0, 0.05, 0.5, 1.0):
        for _ in range(200):
            child = mutate(parent, prob, rng)
            flipped = sum(a != b for a, b in zip(parent, child, strict=True))
            assert flipped >= 1
            if prob == 0.0:
                assert flipped == 1
            if prob == 1.0:
                assert flipped == len(parent)


def test_cache_scores_each_mask_once():
    score, calls = _additive_scorer(np.array([0.1, -0.3]))
    result = aging_evolution(2, score, EvolutionConfig(population=3, sample=2, cycles=30))
    assert len(calls) == len(set(calls)) <= 4  # two edges: at most four distinct masks
    assert len(result.trained) == len(calls)
    cached = [e for e in result.history if e.cached]
    assert cached and all(e.steps == 0 and e.seconds == 0.0 for e in cached)
    assert all(e.score == float(np.dot([0.1, -0.3], e.mask)) for e in result.history)


def test_evolution_config_is_validated():
    with pytest.raises(ConfigError, match="sample"):
        EvolutionConfig(population=2, sample=3)
    with pytest.raises(ConfigError, match="evolution.metric"):
        apply_overrides(Config(), ["evolution.metric=ctr_nll"])
    with pytest.raises(ConfigError, match="evolution.mutation_prob"):
        apply_overrides(Config(), ["evolution.mutation_prob=1.5"])
    assert apply_overrides(Config(), ["evolution.cycles=0"]).evolution.cycles == 0


def test_budget_steps_trains_a_candidate_on_a_prefix_of_train(repo):
    cfg = load_config(repo / SMOKE, ["evolution.budget_steps=6", "evolution.budget_epochs=2"])
    train = load_data(cfg, progress=False).train
    assert budget_train_rows(cfg, train).num_rows == 3 * cfg.retrain.batch_size  # 2 x 3 steps
    assert budget_train_config(cfg).epochs == 2 and not isinstance(
        budget_train_config(cfg), SupernetConfig
    )
    assert budget_train_rows(load_config(repo / SMOKE), train) is train  # budget_steps=0: all


def test_a_new_architecture_replaces_a_one_shot_derived_model(tmp_path):
    wd = artifacts.Workdir(tmp_path)
    edges = candidate_edges("hierarchical", 2, 2)
    oneshot = architecture.architecture_record(
        edges, np.array([0.9, 0.1, 0.8, 0.2]), None, 0.5, ["click", "conversion"], "hierarchical"
    )
    wd.write_json("architecture.json", oneshot.to_json())
    for model in ("autoheri", "esmm"):
        (tmp_path / "models" / model).mkdir(parents=True)
    wd.write_json("results.json", {})
    evolved = architecture.architecture_record(
        edges, np.array([1.0, 0.0, 0.0, 0.0]), None, 0.5, ["click", "conversion"], "evolution"
    )
    assert evolved.method == "evolution"  # never mistaken for a gradient search's record
    assert "(evolution search): 1 of 4" in architecture.render_architecture(evolved, 2)
    _install_architecture(wd, evolved)
    assert wd.read_json("architecture.json", "x") == evolved.to_json()
    assert wd.read_json(ONESHOT_RECORD, "x") == oneshot.to_json()
    assert not (tmp_path / "models" / "autoheri").exists()  # stale: retrain makes it anew
    assert (tmp_path / "models" / "esmm").exists() and not (tmp_path / "results.json").exists()


@pytest.mark.slow
def test_evolve_cli_end_to_end_then_retrain_and_evaluate(repo, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(repo)
    wd = tmp_path / "evo"
    args = ["--config", SMOKE, "--workdir", str(wd), "--no-progress", "--set", "baselines=esmm"]
    args += ["--set", "evolution.population=2", "--set", "evolution.sample=2"]
    args += ["--set", "evolution.cycles=1", "--set", "data.num_train=1024"]  # 4 steps each
    assert main(["evolve", *args]) == 0
    log = [json.loads(line) for line in (wd / "evolution.jsonl").read_text().splitlines()]
    assert len(log) == 3 and [r["index"] for r in log] == [0, 1, 2]
    for r in log:
        assert len(r["mask"]) == 4 and set(r["mask"]) <= {0, 1}
        assert r["cached"] or (r["steps"] == 4 and r["seconds"] > 0 and 0 <= r["score"] <= 1)
    arch = json.loads((wd / "architecture.json").read_text())
    summary = json.loads((wd / "evolution.json").read_text())
    best = max(log, key=lambda r: r["score"])
    assert arch["search_mode"] == "evolution" and arch["kept"] == best["edges"]
    assert [c["prob"] for c in arch["candidates"]] == [float(b) for b in best["mask"]]
    assert summary["cost"]["train_steps"] == sum(r["steps"] for r in log)
    assert summary["cost"]["candidates"] == sum(not r["cached"] for r in log)
    assert summary["oneshot"] is None

    # A rerun replays the logged candidates: no training, no duplicate records.
    assert main(["evolve", *args]) == 0
    assert "evaluations logged, resuming" in capsys.readouterr().out
    assert len((wd / "evolution.jsonl").read_text().splitlines()) == 3
    assert json.loads((wd / "architecture.json").read_text()) == arch
    # Other evolution settings over the same log are refused, naming the key.
    assert main(["evolve", *args, "--set", "evolution.cycles=2"]) == 2
    assert "evolution.cycles" in capsys.readouterr().err

    assert main(["retrain", "--workdir", str(wd), "--no-progress"]) == 0
    assert main(["evaluate", "--workdir", str(wd)]) == 0
    res = json.loads((wd / "results.json").read_text())
    assert res["models"]["autoheri"]["edges"] == arch["kept"]
    assert res["architecture"]["search_mode"] == "evolution"
    assert set(res["models"]) == {"autoheri", "esmm"}
