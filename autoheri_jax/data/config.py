"""The `data` section of a config: where the impressions come from (the simulator's world, or
files and their format) and how they split. `config.Config` holds one; `data/sources.py` builds
the splits from it."""

from __future__ import annotations

import dataclasses

from autoheri_jax.data.worlds import THREE_STAGE_WORLDS, WORLDS, parse_planted_edge
from autoheri_jax.settings import ConfigError, check, check_types

SOURCES = ("simulator", "files")
DATA_FORMATS = (
    "auto",
    "store",
    "aliccp_raw",
    "rechub_aliccp",
    "paddle_aitm",
    "paddle_esmm",
    "aliexpress",
)


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """The `data` section (each field's comment says what it sets); ConfigError naming the
    field for an invalid value, when built."""

    source: str = "simulator"  # "simulator" (the built-in funnel) or "files" (data.path)
    path: str = ""  # files: raw Ali-CCP dir, a peer format's file or dir, or a prepared store
    format: str = "auto"  # files: auto | store | aliccp_raw | rechub_aliccp | paddle_aitm | ...
    min_count: int = 1  # files: ids seen fewer times in train map to 0 (AITM used 10)
    valid_fraction: float = 0.1  # files: share of train carved out as validation (no val file)
    on_bad_row: str = "strict"  # files: strict (stop, naming file and line) or skip (count)
    max_bag_len: int = 32  # entries of a multi-valued field kept per row (longer are cut)
    num_train: int = 200_000  # training impressions
    num_valid: int = 20_000  # validation impressions (bi-level arch steps, model selection)
    num_test: int = 50_000  # test impressions every reported score is computed on
    seed: int = 0  # world + impression seed of the simulator
    num_stages: int = 2  # funnel length: 2 = click -> conversion, 3 adds activation between
    stage_rates: tuple[float, ...] = (0.1,)  # mean conditional rate of each stage after click
    click_rate: float = 0.04  # mean click-through rate
    cascade_strength: float = 0.5  # share of conversion propensity built from click's features
    num_users: int = 20_000  # distinct users of the simulated world
    num_items: int = 50_000  # distinct items of the simulated world
    zipf_exponent: float = 1.1  # popularity skew of users and items
    latent_dim: int = 8  # size of the hidden user / item vectors
    num_dense: int = 0  # extra dense features derived from the hidden vectors
    noise_fields: int = 0  # sparse fields carrying no signal
    # how the conversion stage reuses the click stage's hidden structure (data/worlds.py):
    # cascade (the click interaction, linearly), or a world with a planted answer: shallow
    # (an early click layer's quantity), deep (the click output), planted (teacher layer i at
    # depth j, data.planted_edge), null (nothing shared), bypass (3 stages: conversion reuses
    # click's interaction, activation shares nothing)
    world: str = "cascade"
    planted_edge: str = "0->2"  # world=planted: the edge "i->j" the world plants

    def __post_init__(self):
        check_types(self, "")
        check(self.source in SOURCES, "source", f"one of {SOURCES}")
        check(self.source != "files" or bool(self.path), "path", "data.source=files needs a path")
        check(self.format in DATA_FORMATS, "format", f"one of {DATA_FORMATS}")
        check(self.on_bad_row in ("strict", "skip"), "on_bad_row", "strict or skip")
        check(0 <= self.valid_fraction < 1, "valid_fraction", "must lie in [0, 1)")
        for k in ("min_count", "max_bag_len"):
            check(getattr(self, k) >= 1, k, "must be >= 1")
        for k in ("num_train", "num_test", "num_users", "num_items", "latent_dim"):
            check(getattr(self, k) > 0, f"{k}", "must be > 0")
        for k in ("num_valid", "num_dense", "noise_fields"):
            check(getattr(self, k) >= 0, f"{k}", "must be >= 0")
        check(self.num_stages in (2, 3), "num_stages", "must be 2 or 3")
        check(
            len(self.stage_rates) == self.num_stages - 1,
            "stage_rates",
            f"needs {self.num_stages - 1} rate(s) for {self.num_stages} stages",
        )
        rates = (self.click_rate, *self.stage_rates)
        check(all(0 < r < 1 for r in rates), "stage_rates", "rates must lie in (0, 1)")
        check(0 <= self.cascade_strength <= 1, "cascade_strength", "must lie in [0, 1]")
        check(self.zipf_exponent > 0, "zipf_exponent", "must be > 0")
        check(self.world in WORLDS, "world", f"one of {WORLDS}")
        check(
            self.num_stages == 2 or self.world in THREE_STAGE_WORLDS,
            "world",
            f"{self.world!r} is a 2-stage funnel: needs num_stages=2",
        )
        check(
            self.world != "bypass" or self.num_stages == 3,
            "world",
            "'bypass' is a 3-stage funnel: needs num_stages=3",
        )
        try:
            parse_planted_edge(self.planted_edge)
        except ValueError as e:
            raise ConfigError(f"planted_edge: {e}") from None
