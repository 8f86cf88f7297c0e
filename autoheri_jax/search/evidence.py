"""Evidence from discrete masks: each edge judged by its paired on/off contrast on validation.

The masked search (`edge_search.method = "masked"`) trains the supernet's weights under fixed
Bernoulli(keep_prob) edge masks, one per step (train/step.step_edge_mask), so no edge's weights
learn to rely on a probability that drifts. This module then decides, from the frozen weights:

  masks       C context masks of the other edges (Bernoulli(keep_prob), drawn once from
              `edge_search.seed`); per context c and edge k the pair (k off, k on): M = 2 C E
              masks, every one scored on every validation batch (the same rows: a paired design).
  contrast    d[b, k] = mean_c L_b(c, k off) - L_b(c, k on) for validation batch b: > 0 means
              switching edge k on lowers the loss.
  calibration Switching an edge shifts the mean of the downstream logits, and the entire-space
              log-loss rewards whichever shift moves the prediction toward the validation rate:
              a property of the model's calibration error, not of what the edge carries
              (every edge's raw contrast then shares one sign). So before scoring, each mask's
              conditional logit of every stage t >= 1 is refit, a_t + b_t z_t (Platt scaling
              on the rows that reached stage t-1), on one half of the validation batches and
              scored on the other half (cross-fitting: even batches fit for odd ones and
              back), and the contrast compares recalibrated models.
  decision    z_k = mean_b d / (std_b d / sqrt(n_b)), a t statistic with n_b - 1 degrees of
              freedom. z > threshold: kept; z < -threshold: dropped (evidence it hurts);
              otherwise undecided, and undecided edges follow `edge_search.undecided` ("drop":
              an edge is kept on evidence only). The threshold (`edge_search.threshold` = 0)
              is t_{1 - 0.05 / E, n_b - 1}: a one-sided 5% test, Bonferroni over the E edges.
              What the interval covers: the validation batches' sampling noise for the one
              trained supernet and its C contexts. What it does not: the supernet's own
              training noise (another seed trains other weights), so an edge near the
              threshold can flip between runs; the validated selection (selection.py) then
              compares retrained architectures.

`common_mode` measures what a rule's z share: whether all share one sign and how closely the
per-edge contrasts follow the contrast a pure intercept shift of the same size would give.
Shapes: logits M x B x T, labels B x T (cumulative: label t = reached stage t).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from autoheri_jax import phases
from autoheri_jax.config import EVIDENCE_CRITERIA
from autoheri_jax.model.losses import entire_space_bce
from autoheri_jax.model.network import forward, masks_forward
from autoheri_jax.model.spec import ModelSpec, Params
from autoheri_jax.search.records import CommonMode, EdgeEvidence, Evidence

CRITERIA = EVIDENCE_CRITERIA  # what a contrast can be scored by; config validates the choice
PROPENSITY_CLIP = 0.05  # the IPS criteria's least reach probability (weights <= 20)
DECISIONS = ("kept", "dropped", "undecided")
# Line-searched Newton steps of a Platt fit from (0, 1): enough to reach float32 rounding of the
# converged (a, b), where the line search can no longer rank its tries; each costs 7 passes.
_NEWTON_STEPS = 10
FIT_ROW_BUCKET = 1024  # rows a Platt fit's input is padded to a multiple of


def contrast_masks(num_edges: int, contexts: int, keep_prob: float, seed: int) -> np.ndarray:
    """[C, E, 2, E] 0/1 masks: context c with edge k off ([..., 0, :]) and on ([..., 1, :])."""
    ctx = np.random.default_rng(seed).random((contexts, num_edges)) < keep_prob
    masks = np.repeat(ctx[:, None, None, :], num_edges, axis=1).repeat(2, axis=2)
    eye = np.arange(num_edges)
    masks[:, eye, 0, eye] = False
    masks[:, eye, 1, eye] = True
    return masks.astype(np.float32)


@functools.lru_cache(maxsize=8)
def _masked_logits_fn(spec: ModelSpec):
    """Jitted (params, batch, masks [M, E]) -> M x B x T logits. Only what depends on the mask
    runs per mask: the embedding, the upstream towers and (concat edges) every edge's product
    r_k @ W_k run once per batch (network.gated_concat); other edge ops run under vmap."""

    def logits(params: Params, batch: dict, masks: jax.Array) -> jax.Array:
        if masks_forward(spec):
            return forward(params, spec, batch, gates=masks)
        return jax.vmap(lambda g: forward(params, spec, batch, gates=g))(masks)

    return jax.jit(logits)


@phases.timed("evaluate")
def masked_logits(spec: ModelSpec, params: Params, batches: Sequence[dict], masks) -> jax.Array:
    """[nb, M, B, T] logits of every mask (masks [..., E], flattened to [M, E]) on every one
    of the nb batches (labels are not read), on the device: the batches are dispatched without
    waiting and nothing comes back to the host."""
    fn = _masked_logits_fn(spec)
    flat = jnp.asarray(np.asarray(masks).reshape(-1, spec.num_edges))
    out = [fn(params, {k: v for k, v in b.items() if k != "labels"}, flat) for b in batches]
    return jax.block_until_ready(jnp.stack(out))


_STEP_SIZES = (1.0, 0.5, 0.25, 0.125, 0.0625, 0.0)  # the Newton step's line search


def platt_fit(z: jax.Array, y: jax.Array, w: jax.Array) -> jax.Array:
    """[2] (a, b) minimising the w-weighted BCE of sigmoid(a + b z) against y: logistic
    regression of the label on the logit, by Newton from (0, 1) (the identity map) with a
    line search over the step sizes (a plain Newton step can overshoot from far away; a step
    of 0 keeps a converged fit where it is). z, y, w: [N]; w = 1 on the rows the stage is
    scored on, 0 elsewhere."""
    x = jnp.stack([jnp.ones_like(z), z], axis=-1)  # N x 2
    ridge = 1e-6 * jnp.maximum(jnp.sum(w), 1.0) * jnp.eye(2)
    sizes = jnp.asarray(_STEP_SIZES, z.dtype)

    def loss(theta):
        u = x @ theta
        return jnp.sum(w * (jax.nn.softplus(u) - y * u))

    def newton_step(theta):
        p = jax.nn.sigmoid(x @ theta)
        g = x.T @ (w * (p - y))
        h = (x * (w * p * (1 - p))[:, None]).T @ x + ridge
        return jnp.linalg.solve(h, g)

    def searched(_, theta):
        tries = theta[None] - sizes[:, None] * newton_step(theta)[None]
        return tries[jnp.argmin(jax.vmap(loss)(tries))]

    theta = jax.lax.fori_loop(0, _NEWTON_STEPS, searched, jnp.array([0.0, 1.0], z.dtype))
    # Near the optimum float32 losses cannot rank the tries (their differences fall below the
    # sum's rounding), so plain Newton steps, which converge quadratically there, finish it.
    return jax.lax.fori_loop(0, 4, lambda _, t: t - newton_step(t), theta)


@jax.jit
def _platt_fits(z: jax.Array, y: jax.Array, w: jax.Array) -> jax.Array:
    """z [M, N], y [N], w [N] -> [M, 2]: one Platt fit per mask on the same rows."""
    return jax.vmap(platt_fit, in_axes=(0, None, None))(z, y, w)


def _reached_rows(reached: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row index, weight) of the rows with `reached` > 0, padded with weight-0 rows to a
    multiple of FIT_ROW_BUCKET so that splits of other sizes reuse one compiled fit."""
    rows = np.flatnonzero(np.asarray(reached) > 0)
    size = max(FIT_ROW_BUCKET, -(-len(rows) // FIT_ROW_BUCKET) * FIT_ROW_BUCKET)
    w = np.zeros(size, np.float32)
    w[: len(rows)] = 1.0
    return np.pad(rows, (0, size - len(rows))), w


def fit_recalibration(logits: jax.Array, labels: np.ndarray) -> jax.Array:
    """logits M x N x T, labels N x T -> [M, T, 2] per mask and stage (a_t, b_t); stage 0 (no
    edge enters the first tower) keeps the identity (0, 1).

    Stage t's fit is weighted by the rows that reached stage t - 1, so only those rows are
    handed to it: a weight-0 row adds exactly 0 to every sum, and the post-click stages are
    fitted on a tenth of the rows or fewer (the fits cost ~10x less; the sums' order changes,
    so (a, b) move in float32's last bits)."""
    labels = np.asarray(labels)
    fits = [jnp.broadcast_to(jnp.array([0.0, 1.0], logits.dtype), (logits.shape[0], 2))]
    for t in range(1, logits.shape[-1]):
        rows, w = _reached_rows(labels[:, t - 1])
        fits.append(_platt_fits(jnp.asarray(logits)[:, rows, t], labels[rows, t], w))
    return jnp.stack(fits, axis=1)


def apply_recalibration(logits: jax.Array, ab: jax.Array) -> jax.Array:
    """logits [..., M, B, T] with ab [M, T, 2] -> a + b z per mask and stage."""
    return ab[..., :, None, :, 0] + ab[..., :, None, :, 1] * logits


def entire_nll(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """[..., M] entire-space BCE of logits [..., M, B, T] against labels [B, T]: each stage's
    mean over the rows, summed over stages."""
    fn = lambda z: jnp.sum(entire_space_bce(z, labels))
    return jnp.vectorize(fn, signature="(b,t)->()")(logits)


def conditional_nll(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """[..., M] mean BCE of each stage t >= 1 over the rows that reached t-1, summed over
    stages, of logits [..., M, B, T] against labels [B, T]."""
    total = 0.0
    for t in range(1, logits.shape[-1]):
        z, y, w = logits[..., t], labels[:, t], labels[:, t - 1]
        bce = -(y * jax.nn.log_sigmoid(z) + (1 - y) * jax.nn.log_sigmoid(-z))
        total = total + jnp.sum(w * bce, axis=-1) / jnp.maximum(jnp.sum(w), 1.0)
    return total


def ips_conditional_nll(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """[..., M] inverse-propensity post-click NLL of logits [..., M, B, T]: stage t >= 1's BCE
    on the rows that reached t-1, each weighted by 1 / (the model's probability of reaching
    t-1, clipped at PROPENSITY_CLIP), normalised by the weights and summed over stages. The
    weights undo the click selection, so the loss estimates the post-click error over every
    impression, the quantity cvr* sAUC ranks (the ground truth's best-agreeing criterion)."""
    reach = jnp.ones(logits.shape[:-1], logits.dtype)
    total = 0.0
    for t in range(1, logits.shape[-1]):
        reach = reach * jax.nn.sigmoid(logits[..., t - 1])
        w = labels[:, t - 1] / jnp.clip(jax.lax.stop_gradient(reach), PROPENSITY_CLIP, 1.0)
        z, y = logits[..., t], labels[:, t]
        bce = -(y * jax.nn.log_sigmoid(z) + (1 - y) * jax.nn.log_sigmoid(-z))
        total = total + jnp.sum(w * bce, axis=-1) / jnp.maximum(jnp.sum(w, axis=-1), 1e-12)
    return total


@jax.jit
def _batch_losses(logits, labels, ab_other_half):
    """One batch: logits M x B x T -> dict of [M] losses per criterion (see CRITERIA)."""
    recal = apply_recalibration(logits, ab_other_half)
    return {
        "raw_nll": entire_nll(logits, labels),
        "recal_nll": entire_nll(recal, labels),
        "recal_cvr_nll": conditional_nll(recal, labels),
        "ips_cvr_nll": ips_conditional_nll(logits, labels),
        "recal_ips_cvr_nll": ips_conditional_nll(recal, labels),
    }


@jax.jit
def _shifted_off_losses(off, on, labels):
    """[C, E] entire-space NLL of the 'off' logits shifted by the pair's mean logit change
    (stages t >= 1): the loss change a pure intercept shift of the same size would cause.
    off, on: C x E x B x T."""
    shift = jnp.mean(on - off, axis=-2, keepdims=True)
    shift = shift.at[..., 0].set(0.0)
    return entire_nll(off + shift, labels)


def contrasts(spec: ModelSpec, params: Params, batches: Sequence[dict], masks) -> dict:
    """Per-batch paired contrasts: {criterion: [nb, E] d[b, k]} with d > 0 = edge k helps, plus
    "intercept" [nb, E] (the pure-intercept-shift part of the raw contrast) and "shift_nll"
    (the raw contrast minus it: the first-order calibration correction).

    masks [C, E, 2, E]: a context with edge k switched is often the context itself, so only the
    distinct masks (about C (E + 1) of the 2 C E) are run through the model."""
    if len(batches) < 2:
        raise ValueError(f"the edge contrast needs >= 2 validation batches, got {len(batches)}")
    c, e = masks.shape[:2]
    unique, index = np.unique(np.asarray(masks).reshape(-1, e), axis=0, return_inverse=True)
    logits = masked_logits(spec, params, batches, unique)  # nb x U x B x T
    labels = np.stack([np.asarray(b["labels"], np.float32) for b in batches])  # nb x B x T
    return contrasts_from_logits(logits, labels, index.reshape(c, e, 2))


def contrasts_from_logits(logits: np.ndarray, labels: np.ndarray, pairs: np.ndarray) -> dict:
    """`contrasts` from the logits: logits [nb, U, B, T] of U masks on nb batches, labels
    [nb, B, T], pairs [C, E, 2] the index into U of each context's (edge off, edge on)."""
    nb, t = logits.shape[0], labels.shape[-1]
    logits, labels = jnp.asarray(logits), np.asarray(labels)
    fits = []
    for half in (np.arange(0, nb, 2), np.arange(1, nb, 2)):  # each half's fit scores the other
        lg = jnp.concatenate(list(logits[half]), axis=1)  # U x (|half| B) x T
        fits.append(fit_recalibration(lg, labels[half].reshape(-1, t)))
    ab = jnp.stack([fits[1 - b % 2] for b in range(nb)])  # nb x U x T x 2
    y = jnp.asarray(labels)
    losses = jax.vmap(_batch_losses)(logits, y, ab)
    off, on = np.asarray(pairs)[..., 0], np.asarray(pairs)[..., 1]
    out = {}
    for name, lv in losses.items():  # lv: nb x U
        lv = np.asarray(lv, np.float64)
        out[name] = (lv[:, off] - lv[:, on]).mean(1)
    shifted = jax.vmap(_shifted_off_losses)(logits[:, off], logits[:, on], y)
    raw = np.asarray(losses["raw_nll"], np.float64)
    out["intercept"] = (raw[:, off] - np.asarray(shifted, np.float64)).mean(1)
    out["shift_nll"] = out["raw_nll"] - out["intercept"]
    return out


def z_scores(d: np.ndarray) -> dict:
    """d [nb, E] per-batch contrasts -> per edge mean, standard error, z and 95% t-interval
    (z = 0 where every batch agrees exactly, e.g. an edge whose weights are all zero)."""
    d = np.asarray(d, np.float64)
    n = d.shape[0]
    mean = d.mean(0)
    se = d.std(0, ddof=1) / np.sqrt(n)
    z = np.divide(mean, se, out=np.zeros_like(mean), where=se > 0)
    half = stats.t.ppf(0.975, n - 1) * se
    return {"mean": mean, "se": se, "z": z, "ci_lo": mean - half, "ci_hi": mean + half, "n": n}


EVIDENCE_ALPHA = 0.05  # one-sided level of the per-edge test, before Bonferroni


def t_threshold(batches: int, num_edges: int, alpha: float = EVIDENCE_ALPHA) -> float:
    """The per-edge threshold: the 1 - alpha / num_edges quantile of Student's t with
    batches - 1 degrees of freedom (the contrast's z is a t over the batches)."""
    return float(stats.t.ppf(1.0 - alpha / max(num_edges, 1), batches - 1))


def decide(z: np.ndarray, threshold: float, undecided: str) -> tuple[list[str], np.ndarray]:
    """(per-edge decision of DECISIONS, [E] bool kept) under the rule in the module docstring."""
    decisions = [
        "kept" if v > threshold else "dropped" if v < -threshold else "undecided"
        for v in np.asarray(z)
    ]
    kept = np.array([d == "kept" or (d == "undecided" and undecided == "keep") for d in decisions])
    return decisions, kept


def common_mode(d: np.ndarray, intercept: np.ndarray) -> CommonMode:
    """How much of a rule's per-edge evidence is one shared calibration effect.

    d, intercept: [nb, E] per-batch contrasts of a rule and of a pure intercept shift of the
    same size. -> same_sign (every edge's z has one sign), intercept_corr (correlation over
    edges of the mean contrasts with the intercept-shift ones: 1 = the rule sees calibration
    only) and the z's."""
    z = z_scores(d)["z"]
    a, b = np.asarray(d).mean(0), np.asarray(intercept).mean(0)
    ok = np.std(a) > 0 and np.std(b) > 0
    corr = float(np.corrcoef(a, b)[0, 1]) if ok else None
    same = bool(np.all(z > 0) or np.all(z < 0))
    return CommonMode(same_sign=same, intercept_corr=corr, z=tuple(float(v) for v in z))


class EvidenceOutcome(NamedTuple):
    """What `edge_evidence` decides: the Evidence (architecture.json's "evidence"), each
    edge's EdgeEvidence (its candidate's "evidence") and the [E] bool kept mask."""

    evidence: Evidence
    per_edge: tuple[EdgeEvidence, ...]
    kept: np.ndarray


MIN_BATCHES = 8  # a validation split too small for 8 batches of batch_size is cut into 8
MIN_BATCH_ROWS = 16


def validation_batches(valid, batch_size: int, limit: int) -> list[dict]:
    """The first `limit` (0 = every) full batches of `valid` in row order; batches hold
    batch_size rows, or fewer where that leaves under MIN_BATCHES batches (a z over 2 or 3
    batches would mean nothing)."""
    rows = min(batch_size, valid.num_rows // MIN_BATCHES)
    if rows < MIN_BATCH_ROWS:
        raise ValueError(
            f"the masked search's edge contrast needs >= {MIN_BATCHES} validation batches of "
            f">= {MIN_BATCH_ROWS} rows; the validation split has {valid.num_rows} rows (raise "
            "data.num_valid or data.valid_fraction, or use edge_search.method=gradient)"
        )
    n = valid.num_rows // rows
    n = n if limit <= 0 else min(n, limit)
    return [valid.batch(np.arange(i * rows, (i + 1) * rows)) for i in range(n)]


def no_evidence(num_edges: int, ecfg, rows: int) -> EvidenceOutcome:
    """The outcome of a validation split too small to judge any edge (under MIN_BATCHES x
    MIN_BATCH_ROWS rows, e.g. a tiny sample file): every edge undecided, so by the rule for
    undecided edges none is kept on evidence; the Evidence's `note` says why."""
    logging.getLogger("autoheri_jax").warning(
        "masked search: %d validation rows cannot judge an edge (need >= %d); every edge is "
        "undecided",
        rows,
        MIN_BATCHES * MIN_BATCH_ROWS,
    )
    per_edge = tuple(
        EdgeEvidence(mean=None, ci_lo=None, ci_hi=None, z=0.0, decision="undecided")
        for _ in range(num_edges)
    )
    ev = Evidence(
        criterion=ecfg.criterion,
        threshold=ecfg.threshold,
        batches=0,
        contexts=ecfg.contexts,
        undecided_rule=ecfg.undecided,
        common_mode={},
        note=f"{rows} validation rows: too few to judge any edge",
    )
    return EvidenceOutcome(ev, per_edge, np.full(num_edges, ecfg.undecided == "keep"))


def edge_evidence(spec: ModelSpec, params: Params, valid, ecfg) -> EvidenceOutcome:
    """The masked search's decision for every candidate edge of `spec` from the trained
    supernet's `params`; `ecfg` is the config's MaskedSearch.

    -> (Evidence: the settings and common modes, [E] EdgeEvidence, [E] bool kept)."""
    masks = contrast_masks(spec.num_edges, ecfg.contexts, ecfg.keep_prob, ecfg.seed)
    if valid.num_rows < MIN_BATCHES * MIN_BATCH_ROWS:
        return no_evidence(spec.num_edges, ecfg, valid.num_rows)
    batches = validation_batches(valid, ecfg.batch_size, ecfg.valid_batches)
    d = contrasts(spec, params, batches, masks)
    z = z_scores(d[ecfg.criterion])
    threshold = ecfg.threshold or t_threshold(len(batches), spec.num_edges)
    decisions, kept = decide(z["z"], threshold, ecfg.undecided)
    per_edge = tuple(
        EdgeEvidence(
            mean=float(z["mean"][k]),
            ci_lo=float(z["ci_lo"][k]),
            ci_hi=float(z["ci_hi"][k]),
            z=float(z["z"][k]),
            decision=decisions[k],
        )
        for k in range(spec.num_edges)
    )
    modes = {name: common_mode(d[name], d["intercept"]) for name in CRITERIA}
    ev = Evidence(
        criterion=ecfg.criterion,
        threshold=threshold,
        threshold_rule="set"
        if ecfg.threshold
        else f"t quantile 1 - {EVIDENCE_ALPHA} / {spec.num_edges} edges, {len(batches) - 1} df",
        batches=len(batches),
        contexts=ecfg.contexts,
        undecided_rule=ecfg.undecided,
        common_mode=modes,
    )
    return EvidenceOutcome(ev, per_edge, kept)
