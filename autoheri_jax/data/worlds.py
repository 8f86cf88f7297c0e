"""Worlds with a planted answer: how the conversion stage's hidden term reuses the click stage's.

In the `cascade` world (simulator.py) the conversion term is c·s0 + sqrt(1 - c²)·s1, s0 the click
stage's own user x item interaction: every click layer carries s0, so every edge can deliver it
and no edge is *the* right one. The worlds here plant a specific answer (designs and reasoning:
shared/research/planted-worlds.md). Each is a 2-stage funnel; s_k are standardised bilinear
latent interactions, c = data.cascade_strength, std(.) standardisation on the world's held
sample:

  shallow  click term std(tanh(2 s_a)·tanh(2 s_b)); conversion c·s_a + sqrt(1 - c²)·s1. The
           click output is even in s_a, so it carries almost none of s_a (R² < 1%, tested):
           only click layers that isolate s_a before the product can help, so an early
           source layer should win.
  deep     the same click term h; conversion c·h + sqrt(1 - c²)·s1: only the layers that have
           formed the product carry h, so the last source layer should win.
  null     the same click term; conversion s1 alone, with its own biases: the stages share
           nothing but the ids' embeddings, so no edge should be kept.
  bypass   a 3-stage funnel (click -> activation -> conversion) whose conversion term is
           c·s0 + sqrt(1 - c²)·s2 (s0 the click interaction, as cascade's click) while the
           activation term is its own s1: the conversion stage reuses the click stage and
           skips the middle one, so every edge from the click tower into the conversion tower
           should help and no other edge should (the middle tower carries nothing either
           neighbour needs). Unlike the depth worlds, its answer is a quantity the click
           tower does learn (the bilinear s0; experiments/layer_probe.py).
  additive click term std(s_a + s_b), both bilinear and both linear in the click logit (so,
           unlike shallow's product, each gives the click tower a first-order signal to learn
           it by); conversion c·s_a + sqrt(1 - c²)·s1: a click layer that holds s_a apart from
           s_b hands over a clean s_a, a layer that has merged them a half-noisy one, so an
           early source should win if the tower merges late.
  planted  a teacher click tower T_0..T_2 of random tanh layers (TEACHER_WIDTHS, gain
           TEACHER_GAIN) over [u, v, u⊙v] (the click stage's latent vectors), click term
           std(w·T_2); with data.planted_edge = "i->j", conversion c·std(F(T_i)) +
           sqrt(1 - c²)·s1, F a random network of 3 - j tanh layers and a linear read-out:
           the conversion tower needs T_i at its layer j to have the depth to compute F, so
           edge (i, j) should win; later sources have lost part of T_i, later destinations
           lack the depth.

The click formula depends on the world's family only: shallow, deep and null share it (and so
their click labels, bitwise, for one seed), as do the planted worlds of every position, and
cascade's is the one it always was. Whether a world works is not assumed: the ground truth
(experiments/ground_truth.py) must show it before the world judges a search.
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np

WORLDS = ("cascade", "shallow", "deep", "null", "planted", "bypass", "additive")
THREE_STAGE_WORLDS = ("cascade", "bypass")  # worlds defined for a 3-stage funnel
TEACHER_WIDTHS = (16, 8, 4)  # the planted world's teacher click tower
TEACHER_GAIN = 2.5  # std of a teacher pre-activation per unit input variance
READOUT_WIDTH = 8  # width of every tanh layer of the planted read-out F


def parse_planted_edge(text: str) -> tuple[int, int]:
    """ "i->j" -> (i, j), layers of the 3-layer teacher; ValueError naming the text."""
    src, sep, dst = str(text).partition("->")
    depth = len(TEACHER_WIDTHS)
    try:
        i, j = int(src), int(dst)
    except ValueError:
        i = j = -1
    if not sep or not (0 <= i < depth and 0 <= j < depth):
        raise ValueError(
            f"planted_edge must look like 'i->j' with layers in [0, {depth}), got {text!r}"
        )
    return i, j


@dataclasses.dataclass(frozen=True)
class WorldTerms:
    """A non-cascade world's parameters: everything its hidden terms need beyond the cascade's."""

    kind: str
    other_user: np.ndarray  # [U, d] latent vectors of the click stage's second factor (s_b)
    other_item: np.ndarray  # [I, d]
    teacher: tuple[np.ndarray, ...]  # planted: weight matrices of T_0, T_1, T_2
    click_head: np.ndarray  # planted: [4] w of the click term w·T_2
    readout: tuple[np.ndarray, ...]  # planted: F's tanh layers, then its [width] read-out
    source: int  # planted: the teacher layer i whose representation conversion reuses
    mean: np.ndarray | None = None  # [2] held-sample moments of the raw (click, shared) terms
    std: np.ndarray | None = None


def _gaussian_layers(rng: np.random.Generator, widths: list[int]) -> tuple[np.ndarray, ...]:
    return tuple(
        TEACHER_GAIN * rng.standard_normal((a, b)) / math.sqrt(a)
        for a, b in itertools.pairwise(widths)
    )


def build_terms(
    kind: str, planted_edge: str, rng: np.random.Generator, num_users: int, num_items: int, d: int
) -> WorldTerms:
    """The parameters of world `kind` (not "cascade"), drawn from `rng`."""
    if kind not in WORLDS or kind == "cascade":
        raise ValueError(f"world must be one of {WORLDS[1:]} here, got {kind!r}")
    other_user = rng.standard_normal((num_users, d))
    other_item = rng.standard_normal((num_items, d))
    teacher = _gaussian_layers(rng, [3 * d, *TEACHER_WIDTHS])
    click_head = rng.standard_normal(TEACHER_WIDTHS[-1]) / math.sqrt(TEACHER_WIDTHS[-1])
    source, dest = parse_planted_edge(planted_edge)
    depth = len(TEACHER_WIDTHS) - dest
    widths = [TEACHER_WIDTHS[source], *[READOUT_WIDTH] * depth]
    readout = (*_gaussian_layers(rng, widths), rng.standard_normal(widths[-1]))
    return WorldTerms(kind, other_user, other_item, teacher, click_head, readout, source)


def _teacher_layers(terms: WorldTerms, u: np.ndarray, v: np.ndarray) -> list[np.ndarray]:
    h, out = np.concatenate([u, v, u * v], axis=1), []
    for w in terms.teacher:
        h = np.tanh(h @ w)
        out.append(h)
    return out


def raw_terms(terms: WorldTerms, s: np.ndarray, u: np.ndarray, v: np.ndarray, uidx, iidx):
    """[2, n] unstandardised (click term, term the conversion stage reuses) of world `terms`.

    s: [2, n] standardised interactions (s_a = s[0], s1 = s[1]); u, v: [n, d] the click stage's
    user and item latent vectors of each row; uidx, iidx [n]: each row's user and item."""
    if terms.kind == "bypass":  # its terms are the interactions themselves: no moments needed
        return np.stack([s[0], s[0]])
    if terms.kind == "planted":
        layers = _teacher_layers(terms, u, v)
        h = layers[terms.source]
        for w in terms.readout[:-1]:
            h = np.tanh(h @ w)
        return np.stack([layers[-1] @ terms.click_head, h @ terms.readout[-1]])
    d = u.shape[1]
    s_b = np.einsum("nd,nd->n", terms.other_user[uidx], terms.other_item[iidx]) / math.sqrt(d)
    if terms.kind == "additive":
        return np.stack([s[0] + s_b, s[0]])
    product = np.tanh(2.0 * s[0]) * np.tanh(2.0 * s_b)
    shared = s[0] if terms.kind == "shallow" else product  # deep (null ignores it)
    return np.stack([product, shared])


def with_moments(terms: WorldTerms, raw: np.ndarray) -> WorldTerms:
    """`terms` with the held sample's moments of its raw terms [2, n]."""
    return dataclasses.replace(terms, mean=raw.mean(1), std=raw.std(1) + 1e-12)


def hidden_terms(terms: WorldTerms, raw: np.ndarray, s: np.ndarray, cascade: float) -> np.ndarray:
    """[T, n] standardised hidden terms (click, ..., conversion) from raw [2, n] (`raw_terms`)
    and the interactions s [T, n]; `cascade` (cascade_strength) weighs the reused term against
    the stage's own interaction, keeping unit variance."""
    if terms.kind == "bypass":
        return np.stack([s[0], s[1], cascade * s[0] + math.sqrt(1.0 - cascade * cascade) * s[2]])
    z = (raw - terms.mean[:, None]) / terms.std[:, None]
    if terms.kind == "null":
        return np.stack([z[0], s[1]])
    shared = z[0] if terms.kind == "deep" else z[1]
    return np.stack([z[0], cascade * shared + math.sqrt(1.0 - cascade * cascade) * s[1]])
