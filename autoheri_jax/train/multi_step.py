"""Steps per dispatch: how `loop.train` hands its batches to the step, K steps per jitted call.

A small model's step costs less than its dispatch (Python, the host gather, the transfer,
the launch), so K = `TrainConfig.steps_per_dispatch` steps can run in one call:

  K == 1, host batches   dp.step(state, dp.place_batch(feed.next())): no scan, no store
  K > 1                  K host batches stacked (K x B x ...) and run by one jitted
                         `jax.lax.scan` of the launcher's own per-step function
  device store           (TrainConfig.device_resident) only the steps' row indices (K x B)
                         cross to the device; each step's batch is gathered there inside the
                         jitted call (data/device_store.py), the same rows as the host path

Dispatches end at multiples of K counted from step 0 (and at the last step), so a run
resumed from a checkpoint (written at a dispatch end: K divides checkpoint.every_steps)
dispatches as the uninterrupted run did, and logs, non-finite checks, checkpoints and signal
checks, all taken between dispatches, fall on the same steps (K divides log_every). The step
keys stay fold_in(rng, state.step) with the true step index inside the scan, so K changes no
random number: K = 4 trains the same parameters as K = 1 (tests/test_multi_step.py says how
close: bitwise on CPU for the models tried).

Launchers: single, vmapped seeds and architecture lanes. Mesh and pmap run one step per
dispatch (K > 1 is refused naming the key); the device store serves the single launcher and
architecture lanes ("on" elsewhere is refused, "auto" falls back to host batches).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import jax
import numpy as np

from autoheri_jax.config import ConfigError, TrainConfig
from autoheri_jax.data import device_store
from autoheri_jax.data.pipeline import train_iterator
from autoheri_jax.model.spec import ModelSpec
from autoheri_jax.train.launchers import Launcher


def step_function(dp: Launcher, spec: ModelSpec, cfg: TrainConfig, desc: str) -> Callable:
    """The launcher's per-step function, unjitted: (state, batch) -> (state, aux);
    ConfigError naming `desc` for a launcher that runs one host batch per dispatch."""
    step = dp.step_function(spec, cfg)
    if step is not None:
        return step
    raise ConfigError(
        f"{desc}: steps_per_dispatch={cfg.steps_per_dispatch} / device_resident="
        f"{cfg.device_resident} run on the single, vmapped-seed and architecture-lane "
        f"launchers; the {dp.launcher} launcher runs one step per dispatch from host batches: "
        "set steps_per_dispatch=1 and device_resident=off (or auto)"
    )


def make_store(dp: Launcher, cfg: TrainConfig, data, desc: str):
    """The device store `cfg.device_resident` asks for, or None (host batches); ConfigError
    naming `desc` when device_resident=on and the launcher or the data cannot use one."""
    mode = cfg.device_resident
    if mode == "off":
        return None
    why = dp.device_store_refusal()
    if not why and jax.process_count() > 1:
        why = "each process of a multi-process run feeds its own slice"
    if not why:
        why = device_store.unsupported(data)
    if why and mode == "on":
        raise ConfigError(f"{desc}: device_resident=on: {why}; set device_resident=off or auto")
    if why:
        return None
    if mode == "auto" and device_store.nbytes(data) > device_store.budget_bytes(dp.devices[0]):
        return None
    return device_store.DeviceStore(data, dp.devices[0])


def _stack(trees: list) -> dict:
    return jax.tree.map(lambda *xs: np.stack(xs), *trees)


def _last(tree):
    return jax.tree.map(lambda a: a[-1], tree)


class Dispatch:
    """The loop's step source: `for step in d.ends(start, total): state, aux = d.run(state,
    step)` runs the steps after the previous end up to `step`; aux is the last step's."""

    def __init__(self, dp: Launcher, spec: ModelSpec, cfg: TrainConfig, feed, data, desc: str):
        self.dp, self.feed, self.k = dp, feed, cfg.steps_per_dispatch
        self.store = make_store(dp, cfg, data, desc)
        self.done = 0
        self.one = self.scan = None
        self.plain_step = dp.step  # the K = 1 host path's step (early stopping wraps it)
        if self.k == 1 and self.store is None:
            return  # dp.step on one host batch: nothing else to compile
        inner = step_function(dp, spec, cfg, desc)
        gather = None if self.store is None else self.store.gather

        def batch_of(arrays, x: dict) -> dict:
            if gather is None:
                return x
            rest = {k: v for k, v in x.items() if k != "idx"}  # the bi-level valid batch
            return {**gather(arrays, x["idx"]), **rest}

        def one(state, arrays, x):
            return inner(state, batch_of(arrays, x))

        def scan(state, arrays, xs):
            state, aux = jax.lax.scan(lambda s, x: one(s, arrays, x), state, xs)
            return state, _last(aux)

        self.one = jax.jit(one, donate_argnums=0)
        self.scan = jax.jit(scan, donate_argnums=0)
        if self.store is not None:  # before any resume sets the iterator's position
            feed.train = train_iterator(device_store.StepIndices(feed.source))

    def ends(self, start: int, total: int) -> Iterator[int]:
        """The last step of each dispatch after `start`: multiples of K, then `total`."""
        self.done = step = start
        while step < total:
            step = min((step // self.k + 1) * self.k, total)
            yield step

    def run(self, state, step: int):
        """Runs the steps after the previous end up to `step` (from `ends`); -> (state, aux
        of the last step), both in the launcher's layout."""
        n, self.done = step - self.done, step
        if self.one is None:
            return self.plain_step(state, self.dp.place_batch(self.feed.next()))
        arrays = None if self.store is None else self.store.arrays
        if n == 1:
            return self.one(state, arrays, self.feed.next())
        return self.scan(state, arrays, _stack([self.feed.next() for _ in range(n)]))
