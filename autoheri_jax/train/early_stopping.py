"""Early stopping on the validation loss, with the best weights kept (TrainConfig.early_stop_*).

Every `log_every` steps (and at the last step) the Validate hook (hooks.py) scores the current
weights on the first `early_stop_rows` validation rows: the entire-space NLL summed over the
funnel's stages, the loss that ranks checkpoints. A check that lowers a lane's best loss copies
its weights into `best_params`; `early_stop_patience` checks in a row without a lower loss stop
the lane. The run returns the best weights, not the last ones.

  single run    stops at the step its patience runs out.
  lanes         (seed or architecture lanes, lanes.py) each lane keeps its own best weights and
                patience; a lane that stopped is frozen (its params and optimiser state stop
                changing: `frozen_step`), and the batch stops when every lane has stopped.
                Until the first lane stops the batch runs the unmasked step, so it is bitwise
                the batch without early stopping up to there.

The state (`EarlyStopState`: best weights, best loss and step, checks without improvement, the
step each lane stopped at) is saved with every checkpoint beside the TrainState, so a resumed
run makes the decisions an uninterrupted one makes. The checks run on the host from the
weights alone, so the same seed gives bitwise the same decisions and weights.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from autoheri_jax.config import ConfigError, TrainConfig
from autoheri_jax.data.dataset import CTRDataset
from autoheri_jax.data.eval_batches import EvalBatches
from autoheri_jax.metrics import BinaryScores, nll
from autoheri_jax.model.embedding import embed_distinct_bags
from autoheri_jax.model.losses import stage_probabilities
from autoheri_jax.model.network import forward_outputs
from autoheri_jax.model.spec import ModelSpec, Params
from autoheri_jax.train.predict import predict_dataset


class EarlyStopState(NamedTuple):
    """Per lane (L = 1 for a single run): what the checks decided so far."""

    best_params: Params  # the weights of the best check (lane-leading for lanes)
    best_loss: np.ndarray  # float32 [L]: lowest validation loss seen (inf before any check)
    best_step: np.ndarray  # int32 [L]: the step of that check (0: the initial weights)
    bad_checks: np.ndarray  # int32 [L]: checks in a row without a lower loss
    stopped_at: np.ndarray  # int32 [L]: the step the lane stopped at; 0 = still training


def init(params: Params, lanes: int) -> EarlyStopState:
    """The state before any check, L = max(lanes, 1); `params` (the initial weights,
    lane-leading for lanes) are copied."""
    n = max(lanes, 1)
    return EarlyStopState(
        best_params=jax.tree.map(jnp.copy, params),
        best_loss=np.full(n, np.inf, np.float32),
        best_step=np.zeros(n, np.int32),
        bad_checks=np.zeros(n, np.int32),
        stopped_at=np.zeros(n, np.int32),
    )


def decide(es: EarlyStopState, losses: np.ndarray, step: int, patience: int):
    """(improved [L] bool, the state's new counters) after one check with `losses` [L]; the
    weights are not touched here (see `EarlyStopper.check`). A NaN loss never improves; a
    lane that stopped stays as it is."""
    losses = np.asarray(losses, np.float32)  # float32: the saved state restores exactly
    active = es.stopped_at == 0
    improved = active & (losses < es.best_loss)
    bad = np.where(improved, 0, np.where(active, es.bad_checks + 1, es.bad_checks))
    stop = active & (bad >= patience)
    return improved, es._replace(
        best_loss=np.where(improved, losses, es.best_loss).astype(np.float32),
        best_step=np.where(improved, step, es.best_step).astype(np.int32),
        bad_checks=bad.astype(np.int32),
        stopped_at=np.where(stop, step, es.stopped_at).astype(np.int32),
    )


def _lane_where(mask: jax.Array, new: Any, old: Any) -> Any:
    """Per lane: `new` where mask[k], else `old` (leaves lane-leading)."""
    pick = lambda n, o: jnp.where(mask.reshape((-1,) + (1,) * (jnp.ndim(n) - 1)), n, o)
    return jax.tree.map(pick, new, old)


_take_improved = jax.jit(_lane_where)


def frozen_step(step: Callable) -> Callable:
    """The lane step with lanes that stopped frozen: (state, batch, active [L] bool) -> (state,
    aux); a lane with active False keeps its params and optimiser state."""

    def run(state, batch, active):
        new, aux = step(state, batch)
        return new._replace(
            params=_lane_where(active, new.params, state.params),
            opt_state=_lane_where(active, new.opt_state, state.opt_state),
        ), aux

    return jax.jit(run, donate_argnums=0)


def check_setup(cfg: TrainConfig, valid, desc: str) -> None:
    """ConfigError naming `desc` when early stopping is on and there is no `valid` split."""
    if cfg.early_stop_patience > 0 and valid is None:
        raise ConfigError(
            f"{desc}: early_stop_patience={cfg.early_stop_patience} needs validation rows to "
            "score, and this training has none; set early_stop_patience=0"
        )


def _first_rows(data: CTRDataset, rows: int) -> CTRDataset:
    return data if rows == 0 or rows >= data.num_rows else data.take(slice(0, rows))


def _funnel_nll(entire: np.ndarray, labels: np.ndarray) -> float:
    """Entire-space NLL summed over the stages (the loss that also ranks checkpoints)."""
    return float(sum(nll(BinaryScores(entire[:, t], labels[:, t])) for t in range(labels.shape[1])))


def funnel_loss(spec: ModelSpec, params: Params, data: CTRDataset, batch_size: int) -> float:
    """Scalar validation loss of one model's `params` on every row of `data`: the
    entire-space NLL summed over the stages (`_funnel_nll`)."""
    entire = predict_dataset(spec, params, data, batch_size)[1]
    return _funnel_nll(entire, np.asarray(data.labels))


@functools.lru_cache(maxsize=8)
def _gated_eval_fn(spec: ModelSpec):
    """Jitted (A-leading params, gates [A, E], evaluation batch) -> A x B x T entire probs."""

    def one(params, gates, batch):
        embedded = embed_distinct_bags(params, spec, batch) if "bags" in batch else None
        logits, extras = forward_outputs(params, spec, batch, embedded=embedded, gates=gates)
        return stage_probabilities(logits, spec, extras)[1]

    return jax.jit(jax.vmap(one, in_axes=(0, 0, None)))


def gated_losses(
    spec: ModelSpec, params: Params, gates: np.ndarray, data: CTRDataset, batch_size: int
) -> np.ndarray:
    """[A] validation loss (as `funnel_loss`) of each architecture lane on `data`: params
    A-leading, lane a gated by gates[a] ([A, E])."""
    fn, g = _gated_eval_fn(spec), jnp.asarray(gates, jnp.float32)
    entire = np.zeros((len(gates), data.num_rows, data.num_stages), np.float32)
    batches = EvalBatches(data, batch_size)
    for start in range(0, data.num_rows, batches.batch_size):
        batch = batches.batch(start)
        out = np.asarray(fn(params, g, jax.device_put(batch.inputs)))
        entire[:, start : start + batch.valid] = out[:, : batch.valid]
    labels = np.asarray(data.labels)
    return np.array([_funnel_nll(e, labels) for e in entire])


class EarlyStopper:
    """The run's side of early stopping (hooks.Validate drives it): the checks, the best
    weights, the lane freeze."""

    def __init__(
        self, spec: ModelSpec, cfg: TrainConfig, valid, lanes: int, gates: np.ndarray | None = None
    ):
        self.spec, self.cfg, self.lanes, self.gates = spec, cfg, lanes, gates
        self.patience, self.batch_size = cfg.early_stop_patience, cfg.batch_size
        rows = cfg.early_stop_rows
        if lanes and not isinstance(valid, CTRDataset):  # seed lanes: one split per lane
            self.valid = [_first_rows(v, rows) for v in valid]
        else:
            self.valid = _first_rows(valid, rows)
        self.state: EarlyStopState | None = None
        self._frozen = None

    # ----------------------------------------------------------------- state, checkpoints

    def start(self, params: Params) -> None:
        """Starts a fresh run's state from its initial `params` (canonical layout)."""
        self.state = init(params, self.lanes)

    def abstract(self, abstract_params: Any) -> EarlyStopState:
        """The restore target of the saved state (`abstract_params`: the canonical params')."""
        n = max(self.lanes, 1)
        f = lambda dtype: jax.ShapeDtypeStruct((n,), dtype)
        return EarlyStopState(abstract_params, f(np.float32), f(np.int32), f(np.int32), f(np.int32))

    def saved(self) -> EarlyStopState:
        """The state to checkpoint beside the TrainState."""
        return self.state

    def restored(self, es: EarlyStopState) -> None:
        """Takes back a checkpointed state (counters as host [L] arrays)."""
        to_np = lambda x, dt: np.asarray(jax.device_get(x), dt).reshape(-1)
        self.state = EarlyStopState(
            best_params=es.best_params,
            best_loss=to_np(es.best_loss, np.float32),
            best_step=to_np(es.best_step, np.int32),
            bad_checks=to_np(es.bad_checks, np.int32),
            stopped_at=to_np(es.stopped_at, np.int32),
        )

    # -------------------------------------------------------------------------- the loop

    @property
    def done(self) -> bool:
        return bool((self.state.stopped_at > 0).all())

    def step(self, plain: Callable) -> Callable:
        """The step to run: `plain` while every lane trains, then the freezing one."""

        def run(state, batch):
            active = self.state.stopped_at == 0
            if active.all():
                return plain(state, batch)
            if self._frozen is None:
                self._frozen = frozen_step(plain)
            return self._frozen(state, batch, jnp.asarray(active))

        return run

    def losses(self, params: Params) -> np.ndarray:
        """[L] validation loss of each lane's canonical `params` (architecture lanes on the
        shared split, seed lanes each on its own; [1] for a single run)."""
        if self.gates is not None:
            return gated_losses(self.spec, params, self.gates, self.valid, self.batch_size)
        if self.lanes:  # seed lanes: each its own split
            lane = lambda k: jax.tree.map(lambda x: x[k], params)
            return np.array(
                [
                    funnel_loss(self.spec, lane(k), v, self.batch_size)
                    for k, v in enumerate(self.valid)
                ]
            )
        return np.array([funnel_loss(self.spec, params, self.valid, self.batch_size)])

    def check(self, step: int, params: Params) -> dict:
        """One validation check of the canonical `params`; -> fields for a single run's log
        record (none for lanes)."""
        if self.done:
            return {}
        losses = self.losses(params)
        improved, self.state = decide(self.state, losses, step, self.patience)
        if improved.any():
            if self.lanes:
                best = _take_improved(jnp.asarray(improved), params, self.state.best_params)
            else:
                best = jax.tree.map(jnp.copy, params)
            self.state = self.state._replace(best_params=best)
        return {} if self.lanes else {"early_stop_valid_loss": float(losses[0])}

    def record(self, last_step: int) -> dict:
        """What train.json (and results.json) say: per lane lists for lanes."""
        s = self.state
        one = (lambda a: a.tolist()) if self.lanes else (lambda a: a.tolist()[0])
        stopped = [int(x) or None for x in s.stopped_at]
        return {
            "patience": self.patience,
            "every": self.cfg.log_every,
            "rows": self.cfg.early_stop_rows,
            "stopped_at": stopped if self.lanes else stopped[0],
            "best_step": one(s.best_step),
            "best_valid_loss": one(s.best_loss),
            "last_step": last_step,
        }


def lane_stats(stats: dict, k: int) -> dict:
    """One lane's view of a lane batch's stats: its own early-stop figures."""
    es = stats.get("early_stop")
    if not es or not isinstance(es.get("best_step"), list):
        return dict(stats)
    lane = {key: (v[k] if isinstance(v, list) else v) for key, v in es.items()}
    return {**stats, "early_stop": lane}
