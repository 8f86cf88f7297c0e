"""phases.py: a run's wall time split by phase, compile time taken out of the phase that
asked for it, the parts adding up to the wall time."""

import time

import jax
import jax.numpy as jnp
import pytest

from autoheri_jax import phases


def test_nested_phases_charge_each_second_once():
    with phases.clock() as seconds:
        with phases.phase("train"):
            time.sleep(0.05)
            with phases.phase("write"):
                time.sleep(0.1)
        time.sleep(0.03)  # no phase: "other"
    got = seconds()
    assert set(got) == set(phases.PHASES)
    assert 0.1 <= got["write"] < 0.14
    assert 0.05 <= got["train"] < 0.09  # the inner write is not counted twice
    assert got["other"] >= 0.03
    assert sum(got.values()) == pytest.approx(
        got["train"] + got["write"] + got["other"] + 0.0, abs=got["compile"] + got["data"] + 0.02
    )


def test_compiling_is_charged_to_compile_not_to_the_phase_that_asked():
    fn = jax.jit(lambda x: jnp.tanh(x @ x.T).sum() * 1.5 + 0.25)  # a program never built before

    @phases.timed("train")
    def step():
        return float(fn(jnp.ones((64, 32))))

    with phases.clock() as seconds:
        t0 = time.perf_counter()
        step()
        wall = time.perf_counter() - t0
    got = seconds()
    assert got["compile"] > 0
    assert got["train"] + got["compile"] == pytest.approx(wall, abs=0.01)
    with phases.clock() as seconds:  # built now: nothing left to compile
        step()
    assert seconds()["compile"] == 0.0 and seconds()["train"] > 0


def test_without_a_clock_phases_cost_nothing_and_clocks_do_not_nest():
    with phases.phase("evaluate"):  # no clock open: nothing recorded, nothing raised
        pass
    with phases.clock(), pytest.raises(RuntimeError, match="already open"), phases.clock():
        pass
    with pytest.raises(ValueError, match="phase 'sim'"), phases.phase("sim"):
        pass


def test_render_names_every_phase_with_its_share():
    line = phases.render({"data": 1.0, "compile": 3.0, "train": 4.0, "evaluate": 2.0})
    assert line.startswith("data 1.0s (10%), compile 3.0s (30%), train 4.0s (40%)")
    assert "write 0.0s (0%)" in line and "other 0.0s (0%)" in line
