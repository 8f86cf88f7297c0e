"""loop.train's hooks: a hook runs at exactly the steps it is due (every N from step 0, and the
last step), around the run (start, close, finish), and a hook can stop the run, after which the
hooks behind it in the list are due once more and the checkpoint of that step is written."""

import dataclasses

import jax
import numpy as np
import pytest

from autoheri_jax.config import CheckpointConfig, ModelConfig, ParallelConfig, TrainConfig
from autoheri_jax.data.simulator import simulate_funnel
from autoheri_jax.model.build import build_spec
from autoheri_jax.train.fit import train_model, usual_hooks
from autoheri_jax.train.hooks import Hook
from autoheri_jax.train.lanes import seed_lanes
from autoheri_jax.train.loop import Resumable, fingerprint, train
from autoheri_jax.train.parallel import make_data_parallel

CFG = TrainConfig(epochs=1, batch_size=64, lr=1e-2, log_every=4)  # 1000 rows: 15 steps
MODEL = ModelConfig(embed_dim=4, hidden=(8,))


@pytest.fixture(scope="module")
def data():
    return simulate_funnel(
        num_rows=1000,
        seed=0,
        num_users=60,
        num_items=80,
        click_rate=0.3,
        stage_rates=(0.3,),
        num_dense=1,
    )


@pytest.fixture(scope="module")
def spec(data):
    return build_spec(MODEL, data.vocab_sizes, 1, 2)


class Recorder(Hook):
    """Writes down the steps it is called at and the calls around the run."""

    def __init__(self, every: int):
        self.every, self.steps, self.events = every, [], []

    def start(self, loop):
        self.events.append(("start", loop.start))

    def __call__(self, loop):
        self.steps.append(loop.step)

    def close(self):
        self.events.append(("close",))

    def finish(self, loop):
        self.events.append(("finish", loop.result[1]["steps"]))


class StopAt(Hook):
    every = 1

    def __init__(self, step: int):
        self.step = step

    def __call__(self, loop):
        loop.stop = loop.stop or loop.step == self.step


def _run(spec, data, hooks, cfg=CFG):
    launcher = make_data_parallel(spec, cfg, ParallelConfig())
    return train(launcher, hooks, spec=spec, cfg=cfg, data=data, desc="t")


@pytest.mark.parametrize(("every", "due"), [(4, [4, 8, 12, 15]), (5, [5, 10, 15]), (0, [15])])
def test_a_hook_is_called_every_n_steps_and_at_the_last(spec, data, every, due):
    hook = Recorder(every)
    _, stats = _run(spec, data, [hook])
    assert stats["steps"] == 15
    assert hook.steps == due
    assert hook.events == [("start", 0), ("close",), ("finish", 15)]


def test_dispatches_of_several_steps_call_hooks_at_the_same_steps(spec, data):
    hook = Recorder(4)
    _run(spec, data, [hook], dataclasses.replace(CFG, steps_per_dispatch=2))
    assert hook.steps == [4, 8, 12, 15]


def test_a_hook_stops_the_run_and_the_hooks_behind_it_see_that_step(spec, data):
    before, after = Recorder(4), Recorder(4)
    state, stats = _run(spec, data, [before, StopAt(6), after])
    assert before.steps == [4] and after.steps == [4, 6]
    assert after.events[-1] == ("finish", 6) and stats["steps"] == 6
    assert int(state.step) == 6
    six, _ = train_model(
        spec, dataclasses.replace(CFG, max_steps=6), data, desc="t", progress=False
    )
    for x, y in zip(jax.tree.leaves(state.params), jax.tree.leaves(six.params), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_the_checkpoint_hook_saves_the_step_a_hook_stopped_at(spec, data, tmp_path):
    ck = CheckpointConfig(every_steps=4, keep=10, keep_best=False, async_save=False)
    resumable = Resumable(tmp_path / "ck", ck, {"phase": "t"}, fingerprint(spec, CFG))
    logged = []
    hooks = usual_hooks(
        CFG, on_log=[lambda step, record: logged.append(step)], progress=False, resumable=resumable
    )
    _, stats = _run(spec, data, [StopAt(6), *hooks])
    assert stats["steps"] == 6 and logged == [4, 6]
    saved = sorted(int(p.name) for p in (tmp_path / "ck").iterdir() if p.name.isdigit())
    assert saved == [4, 6]


def test_seed_lanes_run_the_same_loop(spec, data):
    cfgs = [CFG, dataclasses.replace(CFG, seed=1)]
    hook = Recorder(4)
    state, stats = train(
        seed_lanes(spec, cfgs, [data, data]), [hook], spec=spec, cfg=CFG, data=None, desc="t"
    )
    assert hook.steps == [4, 8, 12, 15] and stats["vmapped_seeds"] == 2
    assert state.step.shape == (2,)
