"""Worlds with a planted answer (data/worlds.py): each design's defining property, measured on
the simulator's hidden quantities, and the pairing of their click stages."""

import dataclasses

import numpy as np
import pytest

from autoheri_jax.config import ConfigError, DataConfig
from autoheri_jax.data.simulator import hidden_terms, simulate_funnel
from autoheri_jax.data.worlds import parse_planted_edge

# the planted-worlds study's world (experiments/studies/planted_worlds.py), fewer rows
WORLD = dict(
    num_users=2000,
    num_items=2000,
    latent_dim=2,
    click_rate=0.1,
    stage_rates=(0.03,),
    cascade_strength=0.95,
    zipf_exponent=0.8,
)


def _explained(x: np.ndarray, y: np.ndarray, bins: int = 50) -> float:
    """Share of y's variance explained by E[y | x], x cut into equal-mass bins."""
    edges = np.quantile(x, np.linspace(0, 1, bins + 1))
    b = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, bins - 1)
    means = np.bincount(b, y, bins) / np.maximum(np.bincount(b, minlength=bins), 1)
    return float(np.var(means[b]) / np.var(y))


@pytest.mark.parametrize("seed", [500, 501])
def test_shallow_click_output_carries_almost_none_of_s_a(seed):
    h = hidden_terms(num_rows=100_000, seed=seed, world="shallow", **WORLD)
    s_a, click, conversion = h["interactions"][0], h["offsets"][0], h["offsets"][1]
    assert _explained(click, s_a) < 0.01  # the design's check
    assert np.corrcoef(conversion, s_a)[0, 1] > 0.5  # while conversion is mostly s_a
    # the cascade world is the opposite: its click output is s_a (plus biases)
    c = hidden_terms(num_rows=100_000, seed=seed, **WORLD)
    assert _explained(c["offsets"][0], c["interactions"][0]) > 0.3


def test_deep_reuses_the_click_term_and_null_nothing():
    h = {
        w: hidden_terms(num_rows=50_000, seed=500, world=w, **WORLD)["offsets"]
        for w in ("shallow", "deep", "null")
    }
    corr = {w: np.corrcoef(o[0], o[1])[0, 1] for w, o in h.items()}
    assert corr["deep"] > 0.5 and abs(corr["null"]) < 0.05 and abs(corr["shallow"]) < 0.2


def test_paired_worlds_share_their_click_stage_bitwise():
    runs = {
        w: simulate_funnel(num_rows=20_000, seed=7, world=w, **WORLD)
        for w in ("shallow", "deep", "null")
    }
    ref = runs["shallow"]
    for w, d in runs.items():
        np.testing.assert_array_equal(d.labels[:, 0], ref.labels[:, 0], err_msg=w)
        np.testing.assert_array_equal(d.true_probs[:, 0], ref.true_probs[:, 0], err_msg=w)
        np.testing.assert_array_equal(d.sparse, ref.sparse, err_msg=w)
    assert not np.array_equal(runs["deep"].true_probs[:, 1], ref.true_probs[:, 1])
    planted = [
        simulate_funnel(num_rows=20_000, seed=7, world="planted", planted_edge=e, **WORLD)
        for e in ("0->2", "2->0", "1->1")
    ]
    for d in planted[1:]:
        np.testing.assert_array_equal(d.labels[:, 0], planted[0].labels[:, 0])
        assert not np.array_equal(d.true_probs[:, 1], planted[0].true_probs[:, 1])


def test_planted_conversion_follows_its_teacher_layer():
    """The conversion term of planted i->j is a function of the teacher's layer i: rows with
    nearly the same layer-i representation have nearly the same conversion term (checked by
    the planted world differing from another source's with the same read-out depth)."""
    a = hidden_terms(num_rows=30_000, seed=3, world="planted", planted_edge="0->2", **WORLD)
    b = hidden_terms(num_rows=30_000, seed=3, world="planted", planted_edge="2->2", **WORLD)
    np.testing.assert_array_equal(a["offsets"][0], b["offsets"][0])  # one teacher click stage
    assert abs(np.corrcoef(a["offsets"][1], b["offsets"][1])[0, 1]) < 0.9


def test_world_settings_are_validated_by_name():
    assert parse_planted_edge("1->2") == (1, 2)
    for bad in ("1-2", "3->0", "a->b", "0->-1"):
        with pytest.raises(ValueError, match="planted_edge"):
            parse_planted_edge(bad)
    with pytest.raises(ConfigError, match="^world: one of"):
        DataConfig(world="tree")
    with pytest.raises(ConfigError, match="planted_edge"):
        DataConfig(world="planted", planted_edge="0->5")
    with pytest.raises(ConfigError, match="2-stage"):
        DataConfig(world="deep", num_stages=3, stage_rates=(0.3, 0.1))
    with pytest.raises(ValueError, match="2-stage"):
        simulate_funnel(num_rows=10, seed=0, num_stages=3, stage_rates=(0.3, 0.1), world="null")
    assert dataclasses.replace(DataConfig(), world="null").world == "null"


def test_bypass_conversion_reuses_the_click_stage_and_skips_the_middle_one():
    three = dict(WORLD, num_stages=3, stage_rates=(0.2, 0.15))
    h = hidden_terms(num_rows=50_000, seed=500, world="bypass", **three)
    s, o = h["interactions"], h["offsets"]
    conv = o[2] - (o[2].mean())
    assert np.corrcoef(conv, s[0])[0, 1] > 0.6  # 0.95 of the conversion term is s0
    assert abs(np.corrcoef(o[1], s[0])[0, 1]) < 0.05  # activation shares nothing with click
    assert abs(np.corrcoef(conv, s[1])[0, 1]) < 0.05  # nor conversion with activation
    # the cascade chain is the opposite: its conversion reuses activation's term
    c = hidden_terms(num_rows=50_000, seed=500, **three)["offsets"]
    assert np.corrcoef(c[2], c[1])[0, 1] > 0.5 and np.corrcoef(o[2], o[1])[0, 1] < 0.1
    # and the two worlds share their click stage bitwise
    a = simulate_funnel(num_rows=20_000, seed=7, world="bypass", **three)
    b = simulate_funnel(num_rows=20_000, seed=7, **three)
    np.testing.assert_array_equal(a.labels[:, 0], b.labels[:, 0])
    assert not np.array_equal(a.true_probs[:, 2], b.true_probs[:, 2])


def test_bypass_needs_three_stages():
    with pytest.raises(ConfigError, match="3-stage"):
        DataConfig(world="bypass")
    with pytest.raises(ValueError, match="3-stage"):
        simulate_funnel(num_rows=10, seed=0, world="bypass")
    three = DataConfig(world="bypass", num_stages=3, stage_rates=(0.2, 0.15))
    assert three.world == "bypass"


def test_additive_click_term_mixes_s_a_with_a_second_interaction():
    h = hidden_terms(num_rows=50_000, seed=500, world="additive", **WORLD)
    s_a, click, conversion = h["interactions"][0], h["offsets"][0], h["offsets"][1]
    # the click term is std(s_a + s_b), s_b independent of s_a: about half of s_a's variance
    # reaches the click output, so only layers that keep s_a apart carry it cleanly
    assert 0.3 < _explained(click, s_a) < 0.7
    assert np.corrcoef(conversion, s_a)[0, 1] > 0.5
