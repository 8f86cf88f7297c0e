"""Early stopping on the validation loss (train/early_stopping.py, TrainConfig.early_stop_*).

The problem is made to overfit: 600 training rows, a wide embedding, a large learning rate and
many epochs, so the validation loss turns up after a few checks while the training loss falls.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import numpy as np
import pytest

from autoheri_jax.config import CheckpointConfig, ConfigError, ModelConfig, TrainConfig
from autoheri_jax.model.build import build_spec
from autoheri_jax.train import early_stopping as es
from autoheri_jax.train.arch_batch import ground_truth_masks, train_architectures
from autoheri_jax.train.fit import train_model
from autoheri_jax.train.loop import Resumable, fingerprint
from autoheri_jax.train.predict import predict_dataset
from autoheri_jax.train.seed_batch import train_seeds
from tests.helpers import StopTraining, assert_trees_equal, stop_at, tiny_funnel

CFG = TrainConfig(epochs=8, batch_size=100, lr=3e-2, log_every=5, early_stop_patience=2)
EVERY, PATIENCE = CFG.log_every, CFG.early_stop_patience


@functools.lru_cache(maxsize=1)
def _problem():
    train_rows, valid = tiny_funnel()
    return train_rows.take(slice(0, 600)), valid.take(slice(0, 500))


def _spec(**kw):
    train_rows, _ = _problem()
    model = ModelConfig(embed_dim=8, hidden=(16, 8), **kw)
    return build_spec(model, train_rows.vocab_sizes, train_rows.num_dense, 2)


def _loss(spec, params, valid) -> np.float32:
    entire = predict_dataset(spec, params, valid, 100)[1]
    return np.float32(es._funnel_nll(entire, np.asarray(valid.labels)))


def _equal(a, b) -> None:
    assert_trees_equal(a, b)


def test_decide_stops_after_patience_checks_without_a_lower_loss():
    state = es.init({"w": np.zeros((2, 1), np.float32)}, lanes=2)
    losses = [(1.0, 1.0), (0.9, 1.1), (0.95, 0.8), (np.nan, 0.85), (0.5, 0.9), (0.4, 0.7)]
    stops = []
    for i, loss in enumerate(losses, start=1):
        _, state = es.decide(state, np.array(loss), step=10 * i, patience=2)
        stops.append(state.stopped_at.tolist())
    # lane 0: best 0.9 at step 20, then 0.95 and NaN do not improve: stopped at 40, and the
    # later lower losses no longer count; lane 1: best 0.8 at 30, stopped at 50
    assert stops[-1] == [40, 50]
    assert state.best_step.tolist() == [20, 30]
    np.testing.assert_array_equal(state.best_loss, np.float32([0.9, 0.8]))


def test_config_validates_the_early_stop_fields_and_a_run_needs_validation_rows():
    with pytest.raises(ConfigError, match="early_stop_patience"):
        TrainConfig(early_stop_patience=-1)
    with pytest.raises(ConfigError, match="early_stop_rows"):
        TrainConfig(early_stop_rows=-1)
    for other in ({"steps_per_dispatch": 2, "log_every": 2}, {"device_resident": "auto"}):
        with pytest.raises(ConfigError, match="early_stop_patience.*steps_per_dispatch=1"):
            TrainConfig(early_stop_patience=1, **other)
    train_rows, _ = _problem()
    with pytest.raises(ConfigError, match="early_stop_patience=2 needs validation rows"):
        train_model(_spec(), CFG, train_rows, desc="t", progress=False)


def test_a_single_run_stops_after_patience_checks_and_returns_its_best_weights():
    train_rows, valid = _problem()
    spec = _spec(edge_mode="none")
    logged = []

    def on_log(step, record):
        logged.append((step, record["early_stop_valid_loss"]))

    state, stats = train_model(
        spec, CFG, train_rows, desc="t", progress=False, valid=valid, on_log=on_log
    )
    rec = stats["early_stop"]
    total = 8 * 600 // 100
    assert rec["stopped_at"] is not None and rec["stopped_at"] < total, rec
    assert rec["stopped_at"] == rec["best_step"] + PATIENCE * EVERY
    assert stats["steps"] == rec["last_step"] == rec["stopped_at"]
    assert int(state.step) == rec["stopped_at"]  # nothing ran after the stop
    losses = dict(logged)
    assert min(losses.values()) == losses[rec["best_step"]]
    assert all(losses[s] >= losses[rec["best_step"]] for s in losses if s > rec["best_step"])
    # the returned weights are the best check's: their validation loss is the recorded best
    assert _loss(spec, state.params, valid) == np.float32(rec["best_valid_loss"])
    assert _loss(spec, state.params, valid) < np.float32(losses[rec["stopped_at"]])


def test_off_trains_as_before_and_keeps_the_old_fingerprint():
    train_rows, valid = _problem()
    spec = _spec(edge_mode="none")
    off = dataclasses.replace(CFG, epochs=1, early_stop_patience=0)
    a, stats = train_model(spec, off, train_rows, desc="t", progress=False)
    b, _ = train_model(spec, off, train_rows, desc="t", progress=False, valid=valid)
    _equal(a, b)
    assert "early_stop" not in stats and stats["steps"] == 6
    # checkpoints made before the fields existed still resume: off adds nothing to it
    assert not any(
        k.startswith("early_stop") or k == "log_every" for k in fingerprint(spec, off)["train"]
    )
    # a patience never exhausted trains the same steps: only the params (the best) differ
    never = dataclasses.replace(off, early_stop_patience=100)
    c, stats = train_model(spec, never, train_rows, desc="t", progress=False, valid=valid)
    assert stats["early_stop"]["stopped_at"] is None
    _equal(a._replace(params=None), c._replace(params=None))
    if stats["early_stop"]["best_step"] == 6:
        _equal(a.params, c.params)


def test_architecture_lanes_keep_their_own_best_and_stop_on_their_own():
    train_rows, valid = _problem()
    spec = _spec()
    masks = ground_truth_masks(spec.edges)[1][[0, 1]]  # no edge, every edge
    state, stats = train_architectures(spec, CFG, train_rows, masks, desc="t", valid=valid)
    rec = stats["early_stop"]
    assert len(rec["stopped_at"]) == 2 and stats["steps"] == rec["last_step"]
    got = es.gated_losses(spec, state.params, masks, valid, 100)
    for a in range(2):
        stopped = rec["stopped_at"][a]
        assert stopped is None or stopped == rec["best_step"][a] + PATIENCE * EVERY
        assert np.float32(got[a]) == np.float32(rec["best_valid_loss"][a])
    assert rec["last_step"] == max(s or 0 for s in rec["stopped_at"]) or None in rec["stopped_at"]
    # the lane that stops last, alone, stops where it stops beside the other lane (which
    # froze before it, or with it), with the same best loss
    a = int(np.argmax([s or 10**6 for s in rec["stopped_at"]]))
    _, alone = train_architectures(spec, CFG, train_rows, masks[a : a + 1], desc="t", valid=valid)
    one = alone["early_stop"]
    assert one["stopped_at"] == [rec["stopped_at"][a]]
    assert one["best_step"] == [rec["best_step"][a]]
    np.testing.assert_allclose(one["best_valid_loss"][0], rec["best_valid_loss"][a], rtol=1e-5)


def test_seed_lanes_each_record_their_own_stop():
    train_rows, valid = _problem()
    spec = _spec(edge_mode="none")
    cfgs = [dataclasses.replace(CFG, seed=s) for s in (0, 1)]
    out = train_seeds(spec, cfgs, [train_rows] * 2, desc="t", progress=False, valids=[valid] * 2)
    for state, stats in out:
        rec = stats["early_stop"]
        assert isinstance(rec["best_step"], int)
        assert rec["stopped_at"] is None or rec["stopped_at"] == rec["best_step"] + PATIENCE * EVERY
        assert _loss(spec, state.params, valid) == pytest.approx(rec["best_valid_loss"], rel=1e-5)


@pytest.mark.parametrize("lanes", [False, True])
def test_a_run_stopped_midway_resumes_to_the_uninterrupted_result(tmp_path, lanes):
    """The early-stop state (best weights, best loss, patience count) is in every checkpoint:
    a run killed after a check resumes from the checkpoint before it and ends bitwise where
    the unbroken run ends, with the same record."""
    train_rows, valid = _problem()
    spec = _spec(edge_mode="hierarchical" if lanes else "none")
    masks = ground_truth_masks(spec.edges)[1][[0, 1]] if lanes else None
    ck = CheckpointConfig(every_steps=10, keep=10, keep_best=False, async_save=False)
    fp = fingerprint(spec, CFG, masks)

    def run(**kw):
        kw = {"desc": "t", "progress": False, "valid": valid, **kw}
        if lanes:
            return train_architectures(spec, CFG, train_rows, masks, **kw)
        return train_model(spec, CFG, train_rows, **kw)

    whole, whole_stats = run()
    kill = 15  # the earliest step a run can stop at (a check at 5, then 2 worse ones)
    on_log = [stop_at(kill), None] if lanes else stop_at(kill)
    r = Resumable(tmp_path / "ck", ck, {"phase": "t"}, fp)
    with pytest.raises(StopTraining):
        run(resumable=r, on_log=on_log)
    again, stats = run(resumable=r)
    assert stats["resumed_at"] == 10
    assert stats["early_stop"] == whole_stats["early_stop"]
    _equal(again, whole)
    # a finished (stopped) run resumes to itself without training further
    third, stats = run(resumable=r)
    _equal(third, whole)


def test_a_lane_that_stopped_is_frozen_while_the_others_train_on(monkeypatch):
    """Scripted validation losses: lane 0 is best at its first check (step 5) and stops after
    2 worse ones (step 15); lane 1 improves at every check and trains to the end (step 24).
    Lane 0's optimiser state ends exactly as at step 15 and its weights are those of step 5;
    lane 1 ends where a batch without early stopping ends."""
    train_rows, valid = _problem()
    spec = _spec()
    masks = ground_truth_masks(spec.edges)[1][[0, 1]]
    cfg = dataclasses.replace(CFG, epochs=4)  # 24 steps: checks at 5, 10, 15, 20, 24
    checks = iter([(1.0, 1.0), (2.0, 0.9), (3.0, 0.8), (4.0, 0.7), (5.0, 0.6)])
    monkeypatch.setattr(es.EarlyStopper, "losses", lambda self, params: np.array(next(checks)))
    state, stats = train_architectures(spec, cfg, train_rows, masks, desc="t", valid=valid)
    rec = stats["early_stop"]
    assert rec["stopped_at"] == [15, None] and rec["best_step"] == [5, 24]
    assert rec["last_step"] == stats["steps"] == 24

    off = dataclasses.replace(cfg, early_stop_patience=0)

    def lane(tree, k):
        return jax.tree.map(lambda x: np.asarray(x)[k], tree)

    at5, _ = train_architectures(
        spec, dataclasses.replace(off, max_steps=5), train_rows, masks, desc="t"
    )
    at15, _ = train_architectures(
        spec, dataclasses.replace(off, max_steps=15), train_rows, masks, desc="t"
    )
    end, _ = train_architectures(spec, off, train_rows, masks, desc="t")
    _equal(lane(state.params, 0), lane(at5.params, 0))  # the best weights, kept bitwise
    _equal(lane(state.opt_state, 0), lane(at15.opt_state, 0))  # frozen since its stop
    for x, y in zip(
        jax.tree.leaves(lane(state.params, 1)), jax.tree.leaves(lane(end.params, 1)), strict=True
    ):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
    # not trivially so: lane 0 trained on would have moved on from its step-15 state
    a, b = jax.tree.leaves(lane(at15.opt_state, 0)), jax.tree.leaves(lane(end.opt_state, 0))
    moved = zip(a, b, strict=True)
    assert any(not np.array_equal(x, y) for x, y in moved)
