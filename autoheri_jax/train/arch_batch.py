"""A batch of fixed architectures trained in one jitted step: `jax.vmap` over an edge-mask axis.

The ground truth a search is judged against (experiments/ground_truth.py) retrains many edge
subsets of one supernet from fresh weights with the same budget. Each subset is a 0/1 mask
over the supernet's candidate edges; the gates of `model/network.forward` take the mask, so A
architectures are one model with A stacked states and an A x E mask, and every step trains
them all on the same batch:

  state   A copies of one initial state (the run's seed): every architecture starts from
          the same weights and sees the same batches in the same order (common random
          numbers: architectures are compared without the init and data-order noise).
  masks   A x E. An edge that is off contributes exactly 0 to its layer and gets a zero
          gradient, so with zero-initialised edge blocks (`model.edge_init = "zero"`) and
          Adam its block stays zero: architecture a trains what the derived model with
          edges {k: masks[a, k] = 1} trains from the same seed, equal within float rounding
          on the test's small problem (tests/test_arch_batch.py). Over hundreds of steps
          training amplifies rounding, so a lane and the same mask trained alone drift apart
          (experiments/README.md gives the size on study_base). The lanes of one batch never
          interact (a lane is bitwise the same whatever the other masks).

Scope: one device, no bi-level search; the spec is unsearched (every gate comes from the
mask). The batch is a launcher of loop.train (train/lanes.py ArchLanes) with fit.usual_hooks,
so it logs, stops on a non-finite loss naming the architecture, checkpoints and resumes like
any run.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from autoheri_jax import phases
from autoheri_jax.config import TrainConfig
from autoheri_jax.data.dataset import CTRDataset, eval_batch_indices
from autoheri_jax.model.edges import Edge
from autoheri_jax.model.network import forward
from autoheri_jax.model.spec import ModelSpec, Params
from autoheri_jax.train.checkpoint_hook import Resumable
from autoheri_jax.train.feed import check_sizes
from autoheri_jax.train.fit import usual_hooks
from autoheri_jax.train.lanes import arch_lanes
from autoheri_jax.train.loop import train
from autoheri_jax.train.step import TrainState


def ground_truth_masks(edges: Sequence[Edge], drop: bool = True) -> tuple[list[str], np.ndarray]:
    """(names, [A, E] masks): no edge, every edge, each edge alone and, with `drop`, every edge
    but each one: 2 + 2E architectures (20 for 9 candidates), 2 + E without `drop`."""
    e = len(edges)
    names = ["none", "all"] + [f"only:{x.name}" for x in edges]
    masks = [np.zeros((1, e)), np.ones((1, e)), np.eye(e)]
    if drop:
        names += [f"drop:{x.name}" for x in edges]
        masks.append(1 - np.eye(e))
    return names, np.concatenate(masks).astype(np.float32)


def train_architectures(
    spec: ModelSpec,
    cfg: TrainConfig,
    data: CTRDataset,
    masks: np.ndarray,
    *,
    desc: str,
    progress: bool = False,
    resumable: Resumable | None = None,
    on_log: Sequence[Callable | None] | None = None,
    on_resume: Callable[[int], None] | None = None,
    valid: CTRDataset | None = None,
) -> tuple[TrainState, dict]:
    """Trains every mask of `masks` [A, E] for cfg.epochs from one initial state (loop.train
    on lanes.ArchLanes); -> (the stacked A-leading state, stats). With `resumable`, it
    checkpoints all A lanes and a rerun resumes them; `on_log` has one callback (or None) per
    lane, `on_resume(step)` is called once on a resume. Raises NonFiniteLossError naming the
    architecture and step. With cfg.early_stop_patience > 0, `valid` scores every lane
    (train/early_stopping.py): each keeps its best weights and stops on its own."""
    check_sizes(cfg, data, None, desc)
    launcher = arch_lanes(spec, cfg, np.asarray(masks, np.float32))
    hooks = usual_hooks(
        cfg,
        on_log=on_log or (),
        progress=progress,
        resumable=resumable,
        on_resume=on_resume,
        early_stop_valid=valid if cfg.early_stop_patience else None,
    )
    return train(launcher, hooks, spec=spec, cfg=cfg, data=data, desc=desc)


@functools.lru_cache(maxsize=8)
def _logits_fn(spec: ModelSpec):
    def logits(params: Params, batch: dict, masks: jax.Array) -> jax.Array:
        return jax.vmap(lambda p, g: forward(p, spec, batch, gates=g))(params, masks)

    return jax.jit(logits)


@phases.timed("evaluate")
def architecture_logits(
    spec: ModelSpec, params: Params, masks: np.ndarray, data: CTRDataset, batch_size: int
) -> np.ndarray:
    """[A, N, T] conditional stage logits of every architecture (A-leading stacked params) on
    every row of `data`, exact over the last partial batch."""
    fn, gates = _logits_fn(spec), jnp.asarray(np.asarray(masks, np.float32))
    out = []
    for idx, valid in eval_batch_indices(data.num_rows, min(batch_size, data.num_rows)):
        batch = data.batch(idx)
        batch.pop("labels")
        out.append(np.asarray(fn(params, batch, gates))[:, :valid])
    return np.concatenate(out, axis=1)
