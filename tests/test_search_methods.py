"""One switch per method (edge_search.method): the paper's search as written, the ablation
batch as a search, and the settings a method does not use refused by name; the masked search
on a world where no edge can help."""

import jax
import numpy as np
import pytest

from autoheri_jax import experiment
from autoheri_jax.artifacts import Workdir
from autoheri_jax.config import ConfigError, load_config
from autoheri_jax.train.optim import make_optimizer, param_labels
from autoheri_jax.train.step import init_state, make_update_fn
from autoheri_jax.workdir_format import read_json_file


def _smoke(repo, *overrides):
    return load_config(repo / "experiments" / "configs" / "smoke.py", list(overrides))


def test_the_paper_method_updates_gates_and_weights_in_two_partitions_in_one_jitted_step(repo):
    cfg = _smoke(repo, "edge_search.method=paper")
    model, tcfg = experiment.search_setup(cfg)
    arch = tcfg.arch  # the paper's fixed settings, from PaperSearch
    assert (arch.arch_optimizer, arch.arch_warmup_steps, arch.entropy_warmup_steps) == (
        "adam",
        0,
        0,
    )
    assert arch.entropy_weight > 0 and arch.sparsity_weight == 0 and not arch.bilevel
    assert arch.derive_threshold == 0.5 and arch.init_edge_logit == arch.edge_logit_noise == 0
    assert model.edge_init == "block"
    data = experiment.load_data(cfg, None, progress=False)
    spec, _ = experiment.supernet_spec(cfg, data.train)
    assert spec.searched and spec.has_arch
    opt = make_optimizer(tcfg)
    state = init_state(spec, tcfg, opt)
    labels = jax.tree.leaves(param_labels(state.params))
    assert {"arch", "weights", "embeddings"} == set(labels)
    before = jax.tree.map(np.asarray, state.params)
    step = make_update_fn(spec, tcfg, opt)  # one jitted step for every partition
    state, _ = step(state, data.train.batch(np.arange(256)))
    arch = np.asarray(state.params["arch"]["edge_logits"])
    assert not np.array_equal(arch, before["arch"]["edge_logits"])  # step 0: no warm-up
    moved = jax.tree.map(
        lambda a, b: not np.array_equal(a, b), state.params["towers"], before["towers"]
    )
    assert any(jax.tree.leaves(moved))


def test_each_method_config_has_its_module_and_only_the_ablation_search_trains_no_supernet(repo):
    from autoheri_jax.method_config import METHOD_CONFIGS
    from autoheri_jax.search.methods import METHODS, method_of

    assert set(METHODS) == set(METHOD_CONFIGS)
    for name in METHOD_CONFIGS:
        cfg = _smoke(repo, f"edge_search.method={name}")
        assert method_of(cfg).name == name
        assert experiment.trains_supernet(cfg) == (name != "ablation")
        model, tcfg = experiment.search_setup(cfg)
        assert (tcfg.arch is not None) == (name in ("gradient", "paper"))
        assert (tcfg.edge_keep_prob > 0) == (name == "masked")
        assert (model == cfg.model) == (name != "paper")  # paper: its supernet's block init


def test_a_setting_the_paper_search_does_not_have_is_refused_by_name(repo):
    for key in (
        "derive_threshold=0.7",
        "sparsity_weight=0.1",
        "bilevel=true",
        "init_edge_logit=1.0",
        "arch_warmup_steps=5",
    ):
        name = key.split("=")[0]
        with pytest.raises(ConfigError, match=rf"edge_search\.{name}: .*method=gradient"):
            _smoke(repo, "edge_search.method=paper", f"edge_search.{key}")
    with pytest.raises(ConfigError, match=r"edge_search\.bilevel: .*not of edge_search.method"):
        _smoke(repo, "edge_search.method=ablation", "edge_search.bilevel=true")
    with pytest.raises(ConfigError, match="operator search"):
        _smoke(repo, "edge_search.method=ablation", "model.aggregation=search")


@pytest.mark.slow
@pytest.mark.parametrize("method", ["paper", "ablation"])
def test_each_method_runs_end_to_end_and_records_how_it_decided(repo, tmp_path, method):
    cfg = _smoke(repo, f"edge_search.method={method}")
    wd = Workdir(tmp_path / method)
    record = experiment.search(cfg, wd, progress=False)
    saved = read_json_file(wd.path("architecture.json"))  # format version checked, dropped
    assert saved == record.to_json() and saved["search_method"] == method
    text = wd.path("architecture.txt").read_text()
    if method == "paper":
        assert saved["threshold"] == 0.5 and f"{method} search" in text
        kept = [c["edge"] for c in saved["candidates"] if c["prob"] > 0.5]
        assert saved["kept"] == kept
        assert wd.path("models").exists()
    else:
        names = [c["name"] for c in saved["ablation"]["candidates"]]
        assert len(names) == 2 + 2 * len(saved["candidates"])
        assert {"none", "all"} <= set(names) and "ablation search" in text
        chosen = next(
            c for c in saved["ablation"]["candidates"] if c["name"] == saved["ablation"]["chosen"]
        )
        assert chosen["edges"] == len(saved["kept"])
        assert all("add_one" in c["ablation"] for c in saved["candidates"])


def test_the_add_one_ablation_trains_no_drop_lanes_and_judges_on_its_criterion(repo, tmp_path):
    cfg = _smoke(
        repo,
        "edge_search.method=ablation",
        "edge_search.drop_one=false",
        "edge_search.select=cvr_auc",
    )
    wd = Workdir(tmp_path / "addone")
    record = experiment.search(cfg, wd, progress=False).to_json()
    names = [c["name"] for c in record["ablation"]["candidates"]]
    assert len(names) == 2 + len(record["candidates"])
    assert not any(n.startswith("drop:") for n in names)
    assert record["ablation"]["criterion"] == "cvr_auc"
    assert all(c["ablation"]["drop_one"] is None for c in record["candidates"])
    text = wd.path("architecture.txt").read_text()
    assert "each alone retrained" in text and "validation cvr_auc of the edge alone" in text
    score = {c["name"]: c["score"] for c in record["ablation"]["candidates"]}
    for c in record["candidates"]:
        assert c["ablation"]["add_one"] == score[f"only:{c['edge']}"] - score["none"]
    with pytest.raises(ConfigError, match=r"edge_search\.drop_one"):
        _smoke(repo, "edge_search.drop_one=false")  # the masked search has no such setting


# checkpoint.every_steps: one save per run, not one per 4 steps (the saves were two thirds of
# the search's time; the kept edges and every score are the same either way)
NULL_WORLD = [
    "data.world=null",
    "data.num_train=40000",
    "data.num_valid=8000",
    "search.batch_size=512",
    "retrain.batch_size=512",
    "retrain.epochs=2",
    "checkpoint.every_steps=1000000",
]


@pytest.mark.slow
def test_the_masked_search_keeps_no_edge_in_a_null_world_in_most_seeds(repo, tmp_path):
    """Conversion shares nothing with click (data.world=null): the default search, its margin
    included, keeps no edge in at least 2 of 3 seeds of a small world. (At 8k training rows
    and one epoch, every edge did raise test cvr* sAUC in 3 of 3 seeds (+0.001 to +0.011): the
    click tower's better-trained layers help a conversion tower that has learned almost
    nothing, so there a null world is not null and the search rightly keeps edges.)"""
    kept = []
    for seed in range(3):
        if sum(k == 0 for k in kept) >= 2 or sum(k > 0 for k in kept) >= 2:
            break  # the count is decided: the third seed cannot change it
        seeds = [
            f"data.seed={seed}",
            f"search.seed={seed}",
            f"retrain.seed={seed}",
            f"edge_search.seed={seed}",
        ]
        cfg = _smoke(repo, *NULL_WORLD, *seeds)
        record = experiment.search(cfg, Workdir(tmp_path / str(seed)), progress=False)
        kept.append(len(record.kept))
    assert sum(k == 0 for k in kept) >= 2, kept
