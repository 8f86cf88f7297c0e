"""A vmapped batch of fixed architectures (train/arch_batch.py) equals training each derived
model on its own, and the ground-truth masks are the 2 + 2E architectures of the issue."""

import dataclasses

import jax
import numpy as np
import pytest

from autoheri_jax.config import ConfigError, ModelConfig, TrainConfig, supernet_config
from autoheri_jax.model.build import build_spec
from autoheri_jax.model.variants import derived_model
from autoheri_jax.train.arch_batch import (
    architecture_logits,
    ground_truth_masks,
    train_architectures,
)
from autoheri_jax.train.fit import train_model
from autoheri_jax.train.predict import make_predict_fn
from tests.helpers import StopTraining, assert_trees_equal, stop_at, tiny_funnel

CFG = TrainConfig(epochs=1, batch_size=100, lr=1e-2, log_every=8)
MODEL = ModelConfig(embed_dim=4, hidden=(8, 6))


def test_ground_truth_masks():
    spec = build_spec(MODEL, (5, 7), 0, 2)
    names, masks = ground_truth_masks(spec.edges)
    e = spec.num_edges
    assert len(names) == len(masks) == 2 + 2 * e
    assert masks[0].sum() == 0 and masks[1].sum() == e
    assert all(m.sum() == 1 for m in masks[2 : 2 + e])
    assert all(m.sum() == e - 1 for m in masks[2 + e :])
    assert names[2].startswith("only:") and names[2 + e].startswith("drop:")
    short_names, short = ground_truth_masks(spec.edges, drop=False)
    assert short_names == names[: 2 + e] and np.array_equal(short, masks[: 2 + e])


@pytest.mark.slow
def test_vmapped_architectures_equal_separate_derived_runs():
    train_rows, test_rows = tiny_funnel()
    spec = build_spec(MODEL, train_rows.vocab_sizes, train_rows.num_dense, 2)
    names, all_masks = ground_truth_masks(spec.edges)
    pick = [0, 1, 3, 2 + spec.num_edges + 1]  # none, all, one edge alone, all but one
    masks = all_masks[pick]
    state, stats = train_architectures(spec, CFG, train_rows, masks, desc="t")
    assert stats["architectures"] == 4 and int(state.step[0]) == 40
    batched = architecture_logits(spec, state.params, masks, test_rows, 256)
    scores = []
    for a, mask in enumerate(masks):
        kept = [e for e, m in zip(spec.edges, mask, strict=True) if m]
        alone_spec = build_spec(
            derived_model(MODEL, kept), train_rows.vocab_sizes, train_rows.num_dense, 2
        )
        alone, _ = train_model(alone_spec, CFG, train_rows, desc=names[pick[a]], progress=False)
        batch = test_rows.batch(np.arange(test_rows.num_rows))
        batch.pop("labels")
        cond, _ = make_predict_fn(alone_spec)(alone.params, batch)
        got = 1 / (1 + np.exp(-batched[a]))
        np.testing.assert_allclose(got, np.asarray(cond), rtol=2e-4, atol=2e-5)
        scores.append(got[:, 1])
    # the architectures did differ: the test is not comparing one model with itself
    assert np.abs(scores[0] - scores[1]).max() > 1e-3


def test_architecture_batch_refuses_what_it_cannot_train():
    train_rows, _ = tiny_funnel()
    spec = build_spec(MODEL, train_rows.vocab_sizes, train_rows.num_dense, 2)
    searched = build_spec(MODEL, train_rows.vocab_sizes, train_rows.num_dense, 2, searched=True)
    masks = ground_truth_masks(spec.edges)[1]
    with pytest.raises(ConfigError, match="unsearched"):
        train_architectures(searched, CFG, train_rows, masks, desc="t")
    with pytest.raises(ConfigError, match="masks must be"):
        train_architectures(spec, CFG, train_rows, masks[:, :2], desc="t")
    with pytest.raises(ConfigError, match="sampled masks"):
        train_architectures(
            spec, supernet_config(CFG, edge_keep_prob=0.5), train_rows, masks, desc="t"
        )
    jax.clear_caches()


@pytest.mark.slow
def test_architecture_batch_stopped_midway_resumes_to_the_same_state(tmp_path):
    """The batch is a run of loop.train: it checkpoints all A lanes, a run stopped after
    step 6 resumes at its last checkpoint and ends bitwise where an unbroken run ends, and a
    checkpoint of other masks is refused."""
    from autoheri_jax.config import CheckpointConfig
    from autoheri_jax.train.loop import Resumable, fingerprint

    train_rows, _ = tiny_funnel()
    spec = build_spec(MODEL, train_rows.vocab_sizes, train_rows.num_dense, 2)
    masks = ground_truth_masks(spec.edges)[1][[0, 1, 3]]
    cfg = dataclasses.replace(CFG, log_every=2)
    ck = CheckpointConfig(every_steps=2, keep=10, keep_best=False, async_save=False)

    def resumable(m):
        return Resumable(tmp_path / "ck", ck, {"phase": "t"}, fingerprint(spec, cfg, m))

    whole, _ = train_architectures(spec, cfg, train_rows, masks, desc="t")

    with pytest.raises(StopTraining):
        train_architectures(
            spec,
            cfg,
            train_rows,
            masks,
            desc="t",
            progress=False,
            on_log=[None, stop_at(6), None],
            resumable=resumable(masks),
        )
    resumed_at = []
    again, stats = train_architectures(
        spec,
        cfg,
        train_rows,
        masks,
        desc="t",
        progress=False,
        resumable=resumable(masks),
        on_resume=resumed_at.append,
    )
    assert resumed_at == [4] and stats["resumed_at"] == 4 and stats["architectures"] == 3
    assert_trees_equal(again, whole)
    other = masks[[1, 0, 2]]
    with pytest.raises(Exception, match="masks"):
        train_architectures(spec, cfg, train_rows, other, desc="t", resumable=resumable(other))


def test_a_non_finite_lane_skips_every_lanes_update_and_a_finite_step_applies_them():
    """The lane step's guard sits on the update (one cond outside the vmap): a batch whose loss
    is NaN leaves every lane's params and optimiser state bitwise as they were and records the
    step in each lane; a finite batch then moves them."""
    from autoheri_jax.train.lanes import arch_lanes

    train_rows, _ = tiny_funnel()
    spec = build_spec(MODEL, train_rows.vocab_sizes, train_rows.num_dense, 2)
    masks = ground_truth_masks(spec.edges)[1][:3]
    lanes = arch_lanes(spec, CFG, masks)
    state = lanes.init_state(spec, CFG)
    batch = train_rows.batch(np.arange(100))
    before = jax.tree.map(np.array, (state.params, state.opt_state))
    bad = {**batch, "labels": np.full_like(batch["labels"], np.nan)}
    state, _ = lanes.step(state, bad)
    after = jax.tree.map(np.array, (state.params, state.opt_state))
    for x, y in zip(jax.tree.leaves(before), jax.tree.leaves(after), strict=True):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(np.asarray(state.first_bad_step), [0, 0, 0])
    np.testing.assert_array_equal(np.asarray(state.step), [1, 1, 1])
    state, _ = lanes.step(state, batch)
    pairs = zip(jax.tree.leaves(before[0]), jax.tree.leaves(state.params), strict=True)
    assert any(not np.array_equal(x, y) for x, y in pairs)
