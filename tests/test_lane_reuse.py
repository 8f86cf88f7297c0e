"""Each architecture trained once per run: the validated selection's lanes are saved as the
models the retrain would train again (none = ESMM, all = hierarchical_all_on, the chosen
candidate = autoheri), bitwise the lane's params; a resumed run trains none of them again;
a run without the batch (paper search, select=off) and a model not in it still retrain."""

from __future__ import annotations

import dataclasses
import json

import jax
import numpy as np
import pytest

from autoheri_jax import experiment, seed_runs
from autoheri_jax.artifacts import Workdir
from autoheri_jax.config import ModelConfig, ParallelConfig, load_config
from autoheri_jax.model.build import build_spec
from autoheri_jax.model.network import init_params
from autoheri_jax.model.projection import lane_mask, project_params, same_initial_params
from autoheri_jax.model.variants import VARIANTS, derived_model
from autoheri_jax.search import evidence, selection
from autoheri_jax.train.lanes import unstack_tree
from autoheri_jax.train.step import abstract_state

LANE_MODELS = ("autoheri", "esmm", "hierarchical_all_on")


def _supernet(**kw):
    m = ModelConfig(embed_dim=4, hidden=(8, 6, 5), **kw)
    return m, build_spec(m, (10, 20), 3, 3)


@pytest.mark.parametrize("edge_init", ["zero", "block"])
def test_esmm_all_on_and_a_derived_model_are_lanes_that_start_from_their_own_init(edge_init):
    m, src = _supernet(edge_init=edge_init, edge_pairs="all")
    key = jax.random.key(3)
    src_init = init_params(key, src)
    picked = (src.edges[4], src.edges[1], src.edges[7])
    for model, edges in [
        (VARIANTS["esmm"](m), 0),
        (VARIANTS["hierarchical_all_on"](m), 27),
        (VARIANTS["parallel_all_on"](m), 9),
        (derived_model(m, picked), 3),
    ]:
        dst = build_spec(model, (10, 20), 3, 3)
        mask = lane_mask(src, dst)
        assert mask is not None and mask.sum() == edges
        assert [e for e, on in zip(src.edges, mask, strict=True) if on] == sorted(
            dst.edges, key=src.edges.index
        )
        got = project_params(src, src_init, dst)  # bitwise the model's own fresh params
        jax.tree.map(np.testing.assert_array_equal, got, init_params(key, dst))
        assert same_initial_params(src, dst, key)
    # an edge's row block goes with the edge: ESMM's kernel is the supernet's own block
    esmm = build_spec(VARIANTS["esmm"](m), (10, 20), 3, 3)
    kernel = project_params(src, src_init, esmm)["towers"]["task_2"]["layer_1"]["kernel"]
    np.testing.assert_array_equal(kernel, src_init["towers"]["task_2"]["layer_1"]["kernel"][:8])


def test_a_model_that_no_mask_makes_is_not_a_lane():
    m, src = _supernet()
    others = [
        VARIANTS["mmoe"](m),  # another family
        dataclasses.replace(VARIANTS["esmm"](m), hidden=(8, 6, 4)),  # other towers
        dataclasses.replace(VARIANTS["esmm"](m), dropout=0.1),  # another setting
        dataclasses.replace(VARIANTS["hierarchical_all_on"](m), aggregation="gated_sum"),
        dataclasses.replace(VARIANTS["hierarchical_all_on"](m), edge_pairs="all"),  # more edges
    ]
    for model in others:
        assert lane_mask(src, build_spec(model, (10, 20), 3, 3)) is None, model
    assert lane_mask(src, build_spec(VARIANTS["esmm"](m), (10, 21), 3, 3)) is None  # other data
    with pytest.raises(ValueError, match="not a lane"):
        project_params(
            src, init_params(jax.random.key(0), src), build_spec(others[0], (10, 20), 3, 3)
        )


def test_dropout_drawn_per_device_blocks_the_reuse(repo):
    cfg = load_config(repo / "experiments" / "configs" / "smoke.py", [])
    spec = build_spec(dataclasses.replace(cfg.model, dropout=0.1), (10, 20), 3, 2)
    assert experiment.lane_reuse_blocked(cfg, spec) is None or len(jax.devices()) > 1
    many = dataclasses.replace(cfg, parallel=ParallelConfig(num_devices=8))
    assert "dropout" in experiment.lane_reuse_blocked(many, spec)
    single = dataclasses.replace(cfg, parallel=ParallelConfig(num_devices=8, launcher="single"))
    assert experiment.lane_reuse_blocked(single, spec) is None
    plain = build_spec(cfg.model, (10, 20), 3, 2)
    assert experiment.lane_reuse_blocked(many, plain) is None


# ------------------------------------------------------------------------- end to end


def _cfg(repo, *overrides):
    quick = ["checkpoint.async_save=false", "checkpoint.keep_best=false"]
    return load_config(repo / "experiments" / "configs" / "smoke.py", [*quick, *overrides])


REAL = {"train": experiment.train_model, "batch": selection.train_architectures}


class Trainings:
    """Counts the trainings of a run: single runs (experiment.train_model, by desc) and architecture
    batches (selection.train_architectures), keeping each batch's trained params and stats."""

    def __init__(self, monkeypatch):
        self.single, self.batches = [], []
        real_train, real_batch = REAL["train"], REAL["batch"]

        def train(spec, tcfg, data, *, desc, **kw):
            self.single.append(desc)
            return real_train(spec, tcfg, data, desc=desc, **kw)

        def batch(spec, tcfg, data, masks, **kw):
            state, stats = real_batch(spec, tcfg, data, masks, **kw)
            self.batches.append((spec, jax.device_get(state.params), stats))
            return state, stats

        monkeypatch.setattr(experiment, "train_model", train)
        monkeypatch.setattr(selection, "train_architectures", batch)


def _results(wd: Workdir) -> dict:
    return json.loads(wd.path("results.json").read_text())


def _saved(wd: Workdir, cfg, name: str):
    record = experiment.read_architecture(wd)
    data = experiment.load_data(cfg, wd, progress=False)
    spec = experiment.spec_for(experiment.model_configs(cfg, record)[name], data.train)
    return spec, wd.load_params(name, abstract_state(spec, cfg.retrain).params, "retrain")


@pytest.mark.slow
def test_the_selections_lanes_are_the_models_bitwise_and_nothing_retrains_them(
    repo, tmp_path, monkeypatch
):
    cfg = _cfg(repo, "baselines=[esmm,hierarchical_all_on,parallel_all_on]")
    wd = Workdir(tmp_path / "run")
    count = Trainings(monkeypatch)
    res = experiment.run(cfg, wd, progress=False)
    sel = res["architecture"]["evidence"]["selection"]
    # the supernet and parallel_all_on (in no lane) are the only single trainings
    assert count.single == ["search:autoheri_search", "retrain:parallel_all_on"]
    assert len(count.batches) == 1
    spec, lanes, stats = count.batches[0]
    names = [c["name"] for c in sel["candidates"]]
    want = {"esmm": "none", "hierarchical_all_on": "all", "autoheri": sel["chosen"]}
    for name, lane in want.items():
        source = res["models"][name]["source"]
        assert source == {"training": "selection", "lane": lane, "lanes": names}
        assert res["models"][name]["train"]["steps"] == stats["steps"] == 16
        dst, saved = _saved(wd, cfg, name)
        expect = project_params(spec, unstack_tree(lanes, names.index(lane)), dst)
        jax.tree.map(np.testing.assert_array_equal, saved, expect)  # bitwise the lane's
    assert res["models"]["parallel_all_on"]["source"] == {"training": "retrain", "lane": None}
    assert res["models"]["parallel_all_on"]["train"]["launcher"] == "single"
    logged = {
        f"{r['phase']}:{r['model']}" for r in map(json.loads, wd.path("metrics.jsonl").open())
    }
    assert {f"search:select:{n}" for n in names} | {"retrain:parallel_all_on"} <= logged
    assert not {f"retrain:{n}" for n in LANE_MODELS} & logged


@pytest.mark.slow
def test_a_run_resumed_after_the_selection_trains_nothing_again(repo, tmp_path, monkeypatch):
    cfg = _cfg(repo, "baselines=[esmm,hierarchical_all_on]")
    wd = Workdir(tmp_path / "run")
    first = Trainings(monkeypatch)

    def killed(*a, **kw):  # the run dies once the record is in place, before the lanes
        raise KeyboardInterrupt

    real_save = experiment.save_lane_models
    monkeypatch.setattr(experiment, "save_lane_models", killed)
    with pytest.raises(KeyboardInterrupt):
        experiment.run(cfg, wd, progress=False)
    assert wd.path("architecture.json").exists() and not wd.path("models", "esmm").exists()
    assert any(wd.path("checkpoints", "search.select").iterdir())  # the batch's checkpoints
    monkeypatch.setattr(experiment, "save_lane_models", real_save)

    again = Trainings(monkeypatch)
    experiment.search(cfg, wd, progress=False)  # derives again: the batch resumes at its end
    (_, _, stats) = again.batches[0]
    assert stats["resumed_at"] == stats["steps"] == 16  # nothing left to train
    assert again.single == [] and not wd.path("checkpoints", "search.select").exists()
    for name in LANE_MODELS:
        assert wd.read_json(f"models/{name}/train.json", "x")["source"]["training"] == "selection"

    # killed later (in the retrain, say): a rerun neither derives nor trains anything again
    third = Trainings(monkeypatch)
    monkeypatch.setattr(evidence, "edge_evidence", lambda *a, **k: pytest.fail("derived again"))
    res = experiment.run(cfg, wd, progress=False)
    assert third.single == [] and third.batches == []
    assert {res["models"][n]["source"]["lane"] for n in LANE_MODELS} <= {"none", "all"}
    assert len(first.batches) == 1 and first.single == ["search:autoheri_search"]


@pytest.mark.slow
@pytest.mark.parametrize("how", ["edge_search.method=paper", "edge_search.select=off"])
def test_a_run_without_the_batch_retrains_every_model(repo, tmp_path, monkeypatch, how):
    cfg = _cfg(repo, "baselines=[esmm,hierarchical_all_on]", how)
    count = Trainings(monkeypatch)
    res = experiment.run(cfg, Workdir(tmp_path / "run"), progress=False)
    assert count.batches == []
    assert count.single == ["search:autoheri_search", *(f"retrain:{n}" for n in LANE_MODELS)]
    for name in LANE_MODELS:
        assert res["models"][name]["source"] == {"training": "retrain", "lane": None}


@pytest.mark.slow
def test_the_ablation_batch_lanes_are_reused_too(repo, tmp_path, monkeypatch):
    cfg = _cfg(repo, "baselines=[esmm,hierarchical_all_on]", "edge_search.method=ablation")
    count = Trainings(monkeypatch)
    res = experiment.run(cfg, Workdir(tmp_path / "run"), progress=False)
    assert count.single == [] and len(count.batches) == 1
    chosen = res["architecture"]["ablation"]["chosen"]
    want = {"esmm": "none", "hierarchical_all_on": "all", "autoheri": chosen}
    for name, lane in want.items():
        assert res["models"][name]["source"]["training"] == "ablation"
        assert res["models"][name]["source"]["lane"] == lane


@pytest.mark.slow
def test_vmapped_seed_runs_take_each_runs_lanes_and_vmap_the_rest(repo, tmp_path, monkeypatch):
    cfgs = [
        _cfg(repo, "baselines=[esmm,parallel_all_on]", f"retrain.seed={k}", f"search.seed={k}")
        for k in range(2)
    ]
    wds = [Workdir(tmp_path / f"seed{k}") for k in range(2)]
    count = Trainings(monkeypatch)
    results = seed_runs.run_seeds(cfgs, wds, progress=False)
    assert len(count.batches) == 2  # each run's selection, one by one
    for res in results:
        assert res["models"]["esmm"]["source"]["lane"] == "none"
        assert res["models"]["autoheri"]["source"]["training"] == "selection"
        par = res["models"]["parallel_all_on"]
        assert par["source"]["lane"] is None and par["train"]["launcher"] == "vmap"
