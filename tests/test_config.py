import dataclasses
import json
from pathlib import Path

import pytest

from autoheri_jax.config import (
    METHOD_CONFIGS,
    SEARCH_METHODS,
    Config,
    ConfigError,
    GradientSearch,
    MaskedSearch,
    PaperSearch,
    SupernetConfig,
    TrainConfig,
    apply_overrides,
    from_dict,
    load_config,
    method_fields,
    methods_with,
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
    with pytest.raises(ConfigError, match=r"edge_search\.bilevel"):
        apply_overrides(Config(), [gradient, "edge_search.bilevel=true", "data.num_valid=10"])
    with pytest.raises(ConfigError, match="retrain.bilevel"):
        apply_overrides(Config(), ["retrain.bilevel=true"])
    assert apply_overrides(Config(), [gradient, "edge_search.bilevel=true"]).edge_search.bilevel
    with pytest.raises(ConfigError, match=r"edge_search\.bilevel: a setting of .*gradient"):
        apply_overrides(Config(), ["edge_search.bilevel=true"])
    with pytest.raises(ConfigError, match="operator search"):
        apply_overrides(Config(), ["model.aggregation=search"])


# one setting of each method, and a value it takes
OWN_SETTING = {
    "masked": ("keep_prob", "0.3"),
    "gradient": ("sparsity_weight", "0.01"),
    "paper": ("entropy_weight", "0.02"),
}


@pytest.mark.parametrize("method", SEARCH_METHODS)
def test_a_setting_of_another_method_is_refused_naming_the_key_and_its_method(method):
    """Every other method's every setting, by --set and in a config.json / from_dict section."""
    switch = f"edge_search.method={method}"
    own = set(method_fields(METHOD_CONFIGS[method]))
    foreign = {k for m in METHOD_CONFIGS for k in method_fields(METHOD_CONFIGS[m])} - own
    assert foreign  # every method lacks some other method's settings
    for key in sorted(foreign):
        owners = methods_with(key)
        assert method not in owners
        named = rf"edge_search\.{key}: a setting of edge_search\.method={owners[0]}"
        with pytest.raises(ConfigError, match=named) as e:
            apply_overrides(Config(), [switch, f"edge_search.{key}=1"])
        assert f"not of edge_search.method={method}" in str(e.value)
        section = {"method": method, key: 1}
        with pytest.raises(ConfigError, match=named):
            from_dict(Config, {"edge_search": section})


@pytest.mark.parametrize("method", SEARCH_METHODS)
def test_each_method_config_round_trips_through_json_and_the_cli(method, tmp_path):
    overrides = [f"edge_search.method={method}"]
    if method in OWN_SETTING:
        key, value = OWN_SETTING[method]
        overrides.append(f"edge_search.{key}={value}")
    cfg = apply_overrides(Config(), overrides)
    assert isinstance(cfg.edge_search, METHOD_CONFIGS[method])
    assert cfg.edge_search.method == method
    raw = to_dict(cfg)
    assert raw["edge_search"]["method"] == method  # the tagged section config.json holds
    assert set(raw["edge_search"]) == {"method", *method_fields(METHOD_CONFIGS[method])}
    assert from_dict(Config, raw) == cfg
    save_config(cfg, tmp_path / "config.json")
    assert load_config(tmp_path / "config.json") == cfg
    # the same method again keeps its settings; another method starts from its defaults
    assert apply_overrides(cfg, [f"edge_search.method={method}"]) == cfg
    other = next(m for m in SEARCH_METHODS if m != method)
    back = apply_overrides(cfg, [f"edge_search.method={other}", f"edge_search.method={method}"])
    assert back.edge_search == METHOD_CONFIGS[method]()
    with pytest.raises(ConfigError, match=r"edge_search\.method"):
        apply_overrides(cfg, ["edge_search.method=bayes"])
    with pytest.raises(ConfigError, match="is a section"):
        apply_overrides(cfg, ["edge_search=gradient"])
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.edge_search.method = "x"  # type: ignore[misc]


def test_the_method_configs_validate_their_own_settings():
    for cls, key, bad in (
        (MaskedSearch, "keep_prob", 1.0),
        (MaskedSearch, "criterion", "auc"),
        (GradientSearch, "derive_threshold", 1.0),
        (GradientSearch, "arch_optimizer", "rmsprop"),
        (GradientSearch, "edge_logit_noise", -1.0),
        (PaperSearch, "arch_lr", 0.0),
    ):
        with pytest.raises(ConfigError, match=key):
            cls(**{key: bad})
    with pytest.raises(TypeError):  # the tag is the class, not a setting
        GradientSearch(method="masked")


def test_a_setting_that_moved_to_its_method_is_refused_naming_where_it_lives():
    for old, new in (
        ("search.arch_lr", "edge_search.arch_lr"),
        ("derive_threshold", "edge_search.derive_threshold"),
        ("model.init_edge_logit", "edge_search.init_edge_logit"),
        ("model.edge_logit_noise", "edge_search.edge_logit_noise"),
        ("retrain.edge_keep_prob", None),  # the masked supernet's, written by search_setup
    ):
        with pytest.raises(ConfigError, match=old.replace(".", r"\.")) as e:
            apply_overrides(Config(), [f"{old}=0.1"])
        if new is not None:
            assert f"now {new}" in str(e.value)


def test_the_supernet_gets_its_settings_from_the_method_config():
    from autoheri_jax.experiment import search_setup

    cfg = apply_overrides(Config(), ["edge_search.method=gradient", "edge_search.arch_lr=0.2"])
    model, tcfg = search_setup(cfg)
    assert isinstance(tcfg, SupernetConfig) and tcfg.arch == cfg.edge_search
    assert model == cfg.model and tcfg.edge_keep_prob == 0
    plain = {f.name for f in dataclasses.fields(TrainConfig)}
    assert {k: getattr(tcfg, k) for k in plain} == dataclasses.asdict(cfg.search)
    model, tcfg = search_setup(apply_overrides(Config(), ["edge_search.keep_prob=0.3"]))
    assert tcfg.arch is None and tcfg.edge_keep_prob == 0.3
    paper = apply_overrides(Config(), ["edge_search.method=paper", "edge_search.arch_lr=0.2"])
    model, tcfg = search_setup(paper)
    assert tcfg.arch == paper.edge_search.gradient() and tcfg.arch.arch_lr == 0.2
    assert tcfg.arch.derive_threshold == 0.5 and model.edge_init == "block"
    with pytest.raises(ConfigError, match="search: a TrainConfig, got SupernetConfig"):
        Config(search=SupernetConfig(edge_keep_prob=0.5))  # the method's settings: edge_search


def test_a_searched_model_refuses_a_plain_train_config():
    from autoheri_jax.config import ModelConfig
    from autoheri_jax.model.build import build_spec
    from autoheri_jax.train.step import abstract_state

    spec = build_spec(ModelConfig(embed_dim=4, hidden=(8,)), (5, 7), 0, 2, (), searched=True)
    assert spec.has_arch
    with pytest.raises(ConfigError, match="SupernetConfig"):
        abstract_state(spec, TrainConfig())
    with pytest.raises(ConfigError, match="SupernetConfig"):
        abstract_state(spec, SupernetConfig(edge_keep_prob=0.5))
    assert "arch" in abstract_state(spec, SupernetConfig(arch=GradientSearch())).params


def test_the_cli_refuses_another_methods_setting_in_one_line(tmp_path, capsys):
    from autoheri_jax.cli import main

    smoke = Path(__file__).resolve().parents[1] / "experiments" / "configs" / "smoke.py"
    wd = tmp_path / "wd"
    args = ["search", "--config", str(smoke), "--workdir", str(wd), "--no-progress"]
    assert main([*args, "--set", "edge_search.arch_lr=0.1"]) == 2
    err = capsys.readouterr().err
    assert "edge_search.arch_lr: a setting of edge_search.method=gradient / paper, not of " in err
    assert "edge_search.method=masked" in err and len(err.strip().splitlines()) == 1
    assert not wd.exists()
    # the method, then its settings (the config docstrings' --set lines)
    sets = ["edge_search.method=gradient", "edge_search.arch_lr=0.1", "edge_search.bilevel=true"]
    assert load_config(smoke, sets).edge_search == GradientSearch(arch_lr=0.1, bilevel=True)


def test_an_unknown_key_names_the_nearest_known_one():
    with pytest.raises(ConfigError, match=r"'lrr' not in search; did you mean 'search\.lr'\?\)"):
        apply_overrides(Config(), ["search.lrr=1e-3"])
    with pytest.raises(ConfigError, match=r"did you mean 'model'\?"):
        apply_overrides(Config(), ["modle.hidden=[8]"])
    with pytest.raises(ConfigError, match=r"did you mean 'edge_search\.keep_prob'\?"):
        apply_overrides(Config(), ["edge_search.keep_prb=0.3"])
    with pytest.raises(ConfigError, match=r"did you mean 'search\.lr'\?"):
        from_dict(Config, {"search": {"lrr": 1e-3}})
    with pytest.raises(ConfigError) as far:  # nothing close: no guess
        apply_overrides(Config(), ["data.zzz=1"])
    assert "did you mean" not in str(far.value)


def test_a_family_setting_no_model_of_the_run_reads_is_refused_by_name():
    with pytest.raises(
        ConfigError,
        match="model.num_experts: 8 is read only by mmoe; the run's "
        "models are of the families autoheri ",
    ):
        apply_overrides(Config(), ["model.num_experts=8"])
    with pytest.raises(ConfigError, match="model.tower_hidden: .* read only by shared_bottom"):
        apply_overrides(Config(), ["model.tower_hidden=[8]", "baselines=esmm,aitm"])
    cfg = apply_overrides(Config(), ["model.num_experts=8", "baselines=esmm,mmoe"])
    assert cfg.model.num_experts == 8  # mmoe trains, so its setting is read
    assert apply_overrides(Config(), ["model.num_experts=4"]).model.num_experts == 4  # default
