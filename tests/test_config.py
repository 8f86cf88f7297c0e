import dataclasses
import json
from pathlib import Path

import pytest

from autoheri_jax.config import (
    Config,
    ConfigError,
    TrainConfig,
    apply_overrides,
    from_dict,
    load_config,
    save_config,
    to_dict,
)

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "experiments" / "configs").glob("*.py"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_every_experiment_config_loads_and_documents_its_command(path):
    cfg = load_config(path)
    assert isinstance(cfg, Config)
    doc = path.read_text().split('"""')[1]
    assert f"--config experiments/configs/{path.name}" in doc
    assert "Expected" in doc


def test_overrides_parse_against_field_types():
    cfg = apply_overrides(
        Config(),
        [
            "search.epochs=3",
            "model.hidden=[32,16]",
            "model.detach_upstream=true",
            "search.lr=1e-4",
            "retrain.grad_clip=0",
            "baselines=esmm,parallel_all_on",
            "name=x",
        ],
    )
    assert cfg.search.epochs == 3 and cfg.model.hidden == (32, 16) and cfg.model.detach_upstream
    assert cfg.search.lr == 1e-4 and cfg.retrain.grad_clip == 0.0
    assert cfg.baselines == ("esmm", "parallel_all_on") and cfg.name == "x"
    assert apply_overrides(Config(), ["model.hidden=64,32"]).model.hidden == (64, 32)


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("search.epoch=3", "search.epoch"),
        ("modle.hidden=[8]", "modle"),
        ("search.epochs=two", "search.epochs"),
        ("search.epochs=2.5", "search.epochs"),
        ("model.detach_upstream=maybe", "model.detach_upstream"),
        ("model=3", "model"),
        ("search.epochs=0", "search.epochs"),
        ("model.edge_mode=dense", "edge_mode"),
        ("baselines=esmm,nosuch", "baselines"),
        ("data.stage_rates=[0.1,0.2]", "stage_rates"),
    ],
)
def test_bad_overrides_name_the_key(override, named):
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        apply_overrides(Config(), [override])


def test_wrong_types_in_a_config_file_are_caught_before_compute():
    with pytest.raises(ConfigError, match="epochs: expected int"):
        TrainConfig(epochs="2")
    with pytest.raises(ConfigError, match=r"search\.batch_size: expected int"):
        from_dict(Config, {"search": {"batch_size": 1.5}})
    with pytest.raises(ConfigError, match="unknown config key 'data.rows'"):
        from_dict(Config, {"data": {"rows": 5}})


def test_json_round_trip(tmp_path):
    cfg = apply_overrides(Config(), ["model.fixed_edges=[]", "model.hidden=[16,8]"])
    save_config(cfg, tmp_path / "config.json")
    assert load_config(tmp_path / "config.json") == cfg
    raw = json.loads((tmp_path / "config.json").read_text())
    assert from_dict(Config, raw) == cfg and to_dict(cfg) == raw


def test_missing_and_broken_files_are_named(tmp_path):
    with pytest.raises(ConfigError, match="nope.py"):
        load_config(tmp_path / "nope.py")
    (tmp_path / "empty.py").write_text("x = 1\n")
    with pytest.raises(ConfigError, match="get_config"):
        load_config(tmp_path / "empty.py")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ConfigError, match="bad.json"):
        load_config(tmp_path / "bad.json")


def test_configs_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Config().search.epochs = 5  # type: ignore[misc]


def test_cross_section_checks():
    with pytest.raises(ConfigError, match="search.batch_size"):
        apply_overrides(Config(), ["data.num_train=100"])
    gradient = "edge_search.method=gradient"  # the bi-level arch step needs arch params
    with pytest.raises(ConfigError, match="search.bilevel"):
        apply_overrides(Config(), [gradient, "search.bilevel=true", "data.num_valid=10"])
    with pytest.raises(ConfigError, match="retrain.bilevel"):
        apply_overrides(Config(), ["retrain.bilevel=true"])
    assert apply_overrides(Config(), [gradient, "search.bilevel=true"]).search.bilevel
    with pytest.raises(ConfigError, match="masked has no arch gradient"):
        apply_overrides(Config(), ["search.bilevel=true"])
    with pytest.raises(ConfigError, match="operator search"):
        apply_overrides(Config(), ["model.aggregation=search"])


def test_an_old_config_json_loads_as_the_gradient_search_it_ran():
    from autoheri_jax.config import from_dict, to_dict

    old = to_dict(Config())
    del old["edge_search"]
    assert from_dict(Config, old).edge_search.method == "gradient"
    assert from_dict(Config, to_dict(Config())).edge_search.method == "masked"


def test_search_only_settings_live_in_search_and_an_old_retrain_section_still_loads():
    from autoheri_jax.config import SEARCH_ONLY_FIELDS, SearchConfig, from_dict, to_dict

    cfg = Config()
    assert isinstance(cfg.search, SearchConfig) and not isinstance(cfg.retrain, SearchConfig)
    assert {"arch_lr", "entropy_weight", "bilevel"} <= set(SEARCH_ONLY_FIELDS)
    for key in SEARCH_ONLY_FIELDS:  # no arch settings that do nothing: refused, naming the key
        with pytest.raises(ConfigError, match=f"retrain.{key}"):
            apply_overrides(cfg, [f"retrain.{key}=1"])
    # a config.json written before SearchConfig: retrain carried every search field
    old = to_dict(cfg)
    old["retrain"] = {**old["retrain"], **{k: old["search"][k] for k in SEARCH_ONLY_FIELDS}}
    old["retrain"]["entropy_weight"] = 0.0
    assert from_dict(Config, old) == cfg
    with pytest.raises(ConfigError, match="retrain.arch_lrr"):  # a misspelt key still fails
        from_dict(Config, {**old, "retrain": {**old["retrain"], "arch_lrr": 0.1}})


def test_a_searched_model_refuses_a_plain_train_config():
    from autoheri_jax.config import ModelConfig, SearchConfig, TrainConfig
    from autoheri_jax.model.build import build_spec
    from autoheri_jax.train.step import abstract_state

    spec = build_spec(ModelConfig(embed_dim=4, hidden=(8,)), (5, 7), 0, 2, ())
    assert spec.has_arch
    with pytest.raises(ConfigError, match="SearchConfig"):
        abstract_state(spec, TrainConfig())
    assert "arch" in abstract_state(spec, SearchConfig()).params
