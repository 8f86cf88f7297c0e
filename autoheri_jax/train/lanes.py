"""What every trainer shares: the log record, the non-finite error, and the loop of a vmapped
run whose L lanes (K seeds, or A architectures) train in one jitted step.

`loop.train` runs one model (any launcher, checkpoints, resume); `seed_batch.train_seeds` and
`arch_batch.train_architectures` set up their lanes (per-lane data and seeds, or one initial
state and per-lane edge masks) and hand the stepping to `run_lanes`, so a record, a
non-finite stop and a progress line look the same whichever trainer wrote them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence

import grain
import jax
import numpy as np

from autoheri_jax.progress import Progress


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or inf; the message names the phase and step."""


def log_record(step: int, epoch: int, aux: dict, examples_per_s: float,
               valid_loss: bool = False) -> dict:  # fmt: skip
    """One log point of one model (host values): the record metrics.jsonl and on_log see."""
    return {
        "step": step,
        "epoch": epoch,
        "loss": float(aux["loss"]),
        "stage_bce": [float(x) for x in aux["stage_bce"]],
        "entropy": float(aux["entropy"]),
        **({"valid_loss": float(aux["valid_loss"])} if valid_loss else {}),
        "edge_probs": [float(p) for p in aux["edge_probs"]],
        "examples_per_s": examples_per_s,
    }


def raise_if_a_lane_went_bad(first_bad: np.ndarray, lane_names: Sequence[str], desc: str):
    """Stops a vmapped run at the first lane whose loss went non-finite, naming it and the step."""
    bad = np.asarray(first_bad)
    if (bad >= 0).any():
        k = int(np.flatnonzero(bad >= 0)[0])
        raise NonFiniteLossError(
            f"{desc}: {lane_names[k]} had a non-finite loss at step {int(bad[k])}; "
            "that step's update was dropped and the run stopped"
        )


def lane_batches(source) -> Iterator[dict]:
    """Step i's batch of every lane, read ahead by grain (a source of step -> batch)."""
    options = grain.ReadOptions(num_threads=2, prefetch_buffer_size=4)
    return iter(grain.MapDataset.source(source).to_iter_dataset(options))


def run_lanes(
    step_fn: Callable,
    state,
    batches: Iterator[dict],
    *,
    total: int,
    log_every: int,
    examples_per_step: int,
    lane_names: Sequence[str],
    desc: str,
    bar_desc: str,
    progress: bool,
    epoch_of: Callable[[int, int], int] | None = None,
    on_logs: Sequence[Callable[[int, dict], None] | None] | None = None,
    step_args: tuple = (),
):
    """Steps `state` (lane-leading) `total` times: state, aux = step_fn(state, batch,
    *step_args). Every `log_every` steps and at the end: the non-finite check (naming the
    lane), lane k's record to on_logs[k] (epoch_of(k, step) its epoch), the progress line.
    -> (state, seconds)."""
    lanes = len(lane_names)
    bar = Progress(total, bar_desc, enabled=progress)
    t_start = time.perf_counter()
    for step in range(1, total + 1):
        state, aux = step_fn(state, next(batches), *step_args)
        if step % log_every == 0 or step == total:
            aux, bad = jax.device_get((aux, state.first_bad_step))
            raise_if_a_lane_went_bad(bad, lane_names, desc)
            elapsed = time.perf_counter() - t_start
            for k in range(lanes) if on_logs is not None else ():
                if on_logs[k] is not None:
                    lane = jax.tree.map(lambda x, k=k: x[k], aux)
                    rate = step * examples_per_step / elapsed
                    on_logs[k](step, log_record(step, epoch_of(k, step), lane, rate))
            bar.update(step, loss=float(np.mean(aux["loss"])))
    jax.block_until_ready(state)
    return state, time.perf_counter() - t_start
