"""A seeded synthetic ads funnel with Ali-CCP's field layout and a known ground truth.

Each impression pairs a user and an item drawn with Zipf-skewed popularity from a fixed "world":
users and items carry hidden biases and latent vectors per funnel stage. A click happens with
probability sigmoid(base + user bias + item bias + user-item interaction); each later stage
(conversion, or activation then conversion) happens only after the previous one, driven by its own
biases and an interaction that blends the previous stage's hidden term with an independent one.
`cascade_strength` sets that blend, so the tasks can share anything from nothing to almost all of
their hidden structure. The observable sparse fields are noisy quantised projections of the hidden
profiles (user attributes, item category/shop/brand, hashed user x item crosses), so they carry
real but incomplete signal, and the conditional true probabilities come back for oracle metrics.

The aim is a plausible funnel, not one tuned so that any particular model wins. For scale: the
real Ali-CCP log has about 84M impressions with a click rate near 3.9% and a conversion rate among
clicks near 0.55%. The defaults here keep the click rate (4%) but raise the conversion rate among
clicks to 10%, so that samples of a few hundred thousand rows still hold enough conversions to
learn from.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import numbers

import numpy as np

from autoheri_jax.data import worlds
from autoheri_jax.data.dataset import CTRDataset

ALI_CCP_FIELDS: tuple[str, ...] = (
    "101",
    "121",
    "122",
    "124",
    "125",
    "126",
    "127",
    "128",
    "129",
    "205",
    "206",
    "207",
    "210",
    "216",
    "508",
    "509",
    "702",
    "853",
    "301",
    "109_14",
    "110_14",
    "127_14",
    "150_14",
)

# Attribute fields as (bins per projected dimension, projected dimensions): vocab = bins**dims + 1.
_USER_FIELDS = {
    "121": (10, 2),
    "122": (12, 1),
    "124": (2, 1),
    "125": (7, 1),
    "126": (3, 1),
    "127": (4, 1),
    "128": (2, 1),
    "129": (5, 1),
    "301": (3, 1),
    "109_14": (10, 3),
    "110_14": (8, 3),
    "127_14": (7, 3),
    "150_14": (6, 2),
}
_ITEM_FIELDS = {"206": (16, 2), "207": (12, 3), "210": (9, 3), "216": (11, 3)}
# Cross fields: (user attribute, item attribute, hash buckets), as Ali-CCP pairs them.
_CROSS_FIELDS = {
    "508": ("109_14", "206", 4096),
    "509": ("110_14", "207", 4096),
    "702": ("127_14", "210", 2048),
    "853": ("150_14", "216", 2048),
}
_BIAS_STD = 0.5  # per-stage user and item bias spread (logit units)
_INTERACTION_STD = 1.0  # scale of the standardised hidden interaction in each logit
_ATTR_NOISE = 0.5  # per-entity noise added to a projection before it is quantised
_DENSE_NOISE = 0.1  # per-row uniform noise half-width in dense features
_HELD_ROWS = 100_000  # world sample used to standardise interactions and solve intercepts


@dataclasses.dataclass(frozen=True)
class _World:
    user_cdf: np.ndarray  # popularity CDF over ranks
    user_perm: np.ndarray  # rank -> user index
    item_cdf: np.ndarray
    item_perm: np.ndarray
    user_bias: np.ndarray  # [T, U]
    item_bias: np.ndarray  # [T, I]
    user_lat: np.ndarray  # [T, U, d]
    item_lat: np.ndarray  # [T, I, d]
    user_table: np.ndarray  # int32 [U, 1 + user attributes]: id 101, then _USER_FIELDS
    item_table: np.ndarray  # int32 [I, 1 + item attributes]: id 205, then _ITEM_FIELDS
    vocab: dict[str, int]
    cross_tables: dict[str, np.ndarray]  # field -> flat hash table over (user id, item id)
    user_dense: np.ndarray  # [U, Dd] tanh of projected profiles
    item_dense: np.ndarray  # [I, Dd]
    dense_coef: np.ndarray  # [3, Dd] weights of user term, item term and their product
    dense_range: np.ndarray  # [2, Dd] attainable min and max
    noise_vocab: tuple[int, ...]
    cascade: float
    s_mean: np.ndarray | None = None  # [T] held-sample moments of the raw interactions
    s_std: np.ndarray | None = None
    bases: np.ndarray | None = None  # [T] solved intercepts
    terms: worlds.WorldTerms | None = None  # a planted world's parameters; None = cascade


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _popularity(n: int, exponent: float, rng: np.random.Generator):
    cdf = np.cumsum(np.arange(1, n + 1, dtype=np.float64) ** -exponent)
    return cdf / cdf[-1], rng.permutation(n)


def _quantise(profile: np.ndarray, bins: int, dims: int, rng: np.random.Generator):
    """Ids 1..bins**dims from noisy random projections of unit-variance profiles, rank-binned."""
    n, width = profile.shape
    z = profile @ rng.standard_normal((width, dims)) / math.sqrt(width)
    z = z + _ATTR_NOISE * rng.standard_normal(z.shape)
    rank = np.empty((n, dims), dtype=np.int64)
    np.put_along_axis(rank, np.argsort(z, axis=0), np.arange(n)[:, None], axis=0)
    digits = rank * bins // n
    return 1 + (digits * bins ** np.arange(dims)).sum(axis=1)


def _build_world(
    seed,
    num_stages,
    num_users,
    num_items,
    zipf,
    num_dense,
    d,
    noise_fields,
    cascade,
    targets,
    kind="cascade",
    planted_edge="0->2",
):
    sub = lambda k: np.random.default_rng([seed, k])
    user_cdf, user_perm = _popularity(num_users, zipf, sub(0))
    item_cdf, item_perm = _popularity(num_items, zipf, np.random.default_rng([seed, 0, 1]))
    rng = sub(1)
    user_bias = _BIAS_STD * rng.standard_normal((num_stages, num_users))
    item_bias = _BIAS_STD * rng.standard_normal((num_stages, num_items))
    user_lat = rng.standard_normal((num_stages, num_users, d))
    item_lat = rng.standard_normal((num_stages, num_items, d))
    # Unit-variance hidden profiles (all stages' biases and latents) that observables derive from.
    user_prof = np.concatenate([user_bias.T / _BIAS_STD, *user_lat], axis=1)
    item_prof = np.concatenate([item_bias.T / _BIAS_STD, *item_lat], axis=1)
    vocab = {"101": num_users + 1, "205": num_items + 1}
    rng = sub(2)
    user_attr = {f: _quantise(user_prof, b, m, rng) for f, (b, m) in _USER_FIELDS.items()}
    rng = sub(3)
    item_attr = {f: _quantise(item_prof, b, m, rng) for f, (b, m) in _ITEM_FIELDS.items()}
    vocab |= {f: b**m + 1 for f, (b, m) in (_USER_FIELDS | _ITEM_FIELDS).items()}
    user_table = np.stack([np.arange(1, num_users + 1), *user_attr.values()], 1).astype(np.int32)
    item_table = np.stack([np.arange(1, num_items + 1), *item_attr.values()], 1).astype(np.int32)
    rng = sub(4)
    cross_tables = {}
    for f, (uf, itf, buckets) in _CROSS_FIELDS.items():
        cross_tables[f] = rng.integers(1, buckets + 1, size=vocab[uf] * vocab[itf], dtype=np.int32)
        vocab[f] = buckets + 1
    rng = sub(5)
    user_dense = np.tanh(user_prof @ rng.standard_normal((user_prof.shape[1], num_dense)) / 2.0)
    item_dense = np.tanh(item_prof @ rng.standard_normal((item_prof.shape[1], num_dense)) / 2.0)
    coef = rng.uniform(-1.0, 1.0, size=(3, num_dense))
    # The dense value is bilinear in (user term, item term): its extremes sit at the corners.
    uext, iext = (user_dense.min(0), user_dense.max(0)), (item_dense.min(0), item_dense.max(0))
    corners = np.stack([coef[0] * a + coef[1] * b + coef[2] * a * b for a in uext for b in iext])
    dense_range = np.stack([corners.min(0) - _DENSE_NOISE, corners.max(0) + _DENSE_NOISE])
    noise_vocab = tuple(int(v) for v in sub(6).integers(2, 1001, size=noise_fields))
    world = _World(
        user_cdf,
        user_perm,
        item_cdf,
        item_perm,
        user_bias,
        item_bias,
        user_lat,
        item_lat,
        user_table,
        item_table,
        vocab,
        cross_tables,
        user_dense,
        item_dense,
        coef,
        dense_range,
        noise_vocab,
        cascade,
    )
    # Standardise the raw interactions and solve the intercepts on a held sample of this world.
    uidx, iidx = _draw_pairs(world, _HELD_ROWS, seed, 7)
    raw = _raw_interactions(world, uidx, iidx)
    world = dataclasses.replace(world, s_mean=raw.mean(1), s_std=raw.std(1) + 1e-12)
    if kind != "cascade":  # its own stream: the cascade world's draws stay as they were
        terms = worlds.build_terms(kind, planted_edge, sub(8), num_users, num_items, d)
        world = dataclasses.replace(world, terms=terms)
        terms = worlds.with_moments(terms, _world_raw_terms(world, uidx, iidx))
        world = dataclasses.replace(world, terms=terms)
    bases = _solve_bases(_logit_offsets(world, uidx, iidx), targets)
    return dataclasses.replace(world, bases=bases)


@functools.lru_cache(maxsize=4)
def _cached_world(*args) -> _World:
    """One world per argument tuple: the train and test draws of a run share it."""
    return _build_world(*args)


def _draw_pairs(world: _World, n: int, seed: int, key: int, draw: int = 0):
    u = np.random.default_rng(_stream(seed, key, 0, draw=draw)).random(n)
    i = np.random.default_rng(_stream(seed, key, 1, draw=draw)).random(n)
    uidx = world.user_perm[np.minimum(np.searchsorted(world.user_cdf, u), len(world.user_cdf) - 1)]
    iidx = world.item_perm[np.minimum(np.searchsorted(world.item_cdf, i), len(world.item_cdf) - 1)]
    return uidx, iidx


def _stream(seed: int, *key: int, draw: int = 0) -> list[int]:
    """The seed sequence of one random stream of impression draw `draw`. Draw 0 keeps the
    original keys (bitwise the same data as before draws existed); draw d > 0 appends
    (1 << 20) + d, a tail no draw-0 key ever has, so the draws of one world never share a
    stream."""
    return [seed, *key] if draw == 0 else [seed, *key, (1 << 20) + draw]


def _raw_interactions(world: _World, uidx, iidx) -> np.ndarray:
    d = world.user_lat.shape[2]
    return np.stack(
        [
            np.einsum("nd,nd->n", np.take(ul, uidx, axis=0), np.take(il, iidx, axis=0))
            / math.sqrt(d)
            for ul, il in zip(world.user_lat, world.item_lat, strict=True)
        ]
    )


def _interactions(world: _World, uidx, iidx) -> np.ndarray:
    """[T, n] every stage's standardised user x item interaction."""
    return (_raw_interactions(world, uidx, iidx) - world.s_mean[:, None]) / world.s_std[:, None]


def _world_raw_terms(world: _World, uidx, iidx) -> np.ndarray:
    u, v = np.take(world.user_lat[0], uidx, axis=0), np.take(world.item_lat[0], iidx, axis=0)
    s = _interactions(world, uidx, iidx)
    return worlds.raw_terms(world.terms, s, u, v, uidx, iidx)


def _logit_offsets(world: _World, uidx, iidx) -> np.ndarray:
    """[T, n] logits without intercepts. Cascade: stage k's hidden term blends stage k-1's with
    its own; a planted world's terms come from worlds.py."""
    s = _interactions(world, uidx, iidx)
    c = world.cascade
    if world.terms is not None:
        raw = _world_raw_terms(world, uidx, iidx)
        hidden = list(worlds.hidden_terms(world.terms, raw, s, c))
    else:
        hidden = [s[0]]
        for k in range(1, len(s)):
            hidden.append(c * hidden[-1] + math.sqrt(1.0 - c * c) * s[k])
    biases = np.take(world.user_bias, uidx, axis=1) + np.take(world.item_bias, iidx, axis=1)
    return biases + _INTERACTION_STD * np.stack(hidden)


def _solve_bases(offsets: np.ndarray, targets: tuple[float, ...]) -> np.ndarray:
    """Intercepts so stage k's rate among rows reaching stage k-1 hits targets[k] (bisection)."""
    bases, reach = [], np.ones(offsets.shape[1])
    for z, target in zip(offsets, targets, strict=True):
        lo, hi = -40.0, 40.0
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            below = np.average(_sigmoid(mid + z), weights=reach) < target
            lo, hi = (mid, hi) if below else (lo, mid)
        bases.append(0.5 * (lo + hi))
        reach = reach * _sigmoid(bases[-1] + z)
    return np.asarray(bases)


def _check_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _check_real(name: str, value, lo: float, hi: float, *, open_lo: bool, open_hi: bool) -> None:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    above = ok and (value > lo if open_lo else value >= lo)
    ok = above and (value < hi if open_hi else value <= hi)
    if not ok:
        span = f"{'(' if open_lo else '['}{lo}, {hi}{')' if open_hi else ']'}"
        raise ValueError(f"{name} must be a finite number in {span}, got {value!r}")


def _setup(args: dict) -> tuple[_World, np.ndarray, np.ndarray]:
    """The world of `simulate_funnel`'s checked arguments `args` (every one, defaults filled
    in) and the (user, item) of each of its rows."""
    num_stages, rates, world = args["num_stages"], args["stage_rates"], args["world"]
    _check_int("num_rows", args["num_rows"], 1)
    _check_int("seed", args["seed"], 0)
    if isinstance(num_stages, bool) or num_stages not in (2, 3):
        raise ValueError(f"num_stages must be 2 or 3, got {num_stages!r}")
    _check_int("num_users", args["num_users"], 1)
    _check_int("num_items", args["num_items"], 1)
    _check_real("zipf_exponent", args["zipf_exponent"], 0.0, 10.0, open_lo=False, open_hi=False)
    _check_real("click_rate", args["click_rate"], 0.0, 1.0, open_lo=True, open_hi=True)
    try:
        rates = tuple(rates)
    except TypeError:
        raise ValueError(f"stage_rates must be a tuple of rates, got {rates!r}") from None
    if len(rates) != num_stages - 1:
        raise ValueError(
            f"stage_rates must have num_stages - 1 = {num_stages - 1} entries, got {rates!r}"
        )
    for k, rate in enumerate(rates):
        _check_real(f"stage_rates[{k}]", rate, 0.0, 1.0, open_lo=True, open_hi=True)
    cascade = args["cascade_strength"]
    _check_real("cascade_strength", cascade, 0.0, 1.0, open_lo=False, open_hi=False)
    for name in ("num_dense", "noise_fields", "draw"):
        _check_int(name, args[name], 0)
    _check_int("latent_dim", args["latent_dim"], 1)
    if world not in worlds.WORLDS:
        raise ValueError(f"world must be one of {worlds.WORLDS}, got {world!r}")
    if num_stages != 2 and world not in worlds.THREE_STAGE_WORLDS:
        raise ValueError(f"world {world!r} is a 2-stage funnel, got num_stages={num_stages}")
    if world == "bypass" and num_stages != 3:
        raise ValueError(f"world 'bypass' is a 3-stage funnel, got num_stages={num_stages}")
    worlds.parse_planted_edge(args["planted_edge"])

    seed = int(args["seed"])
    built = _cached_world(
        seed,
        num_stages,
        int(args["num_users"]),
        int(args["num_items"]),
        float(args["zipf_exponent"]),
        int(args["num_dense"]),
        int(args["latent_dim"]),
        int(args["noise_fields"]),
        float(cascade),
        (float(args["click_rate"]), *map(float, rates)),
        world,
        str(args["planted_edge"]),
    )
    uidx, iidx = _draw_pairs(built, int(args["num_rows"]), seed, 10, args["draw"])
    return built, uidx, iidx


def hidden_terms(**kwargs) -> dict[str, np.ndarray]:
    """The hidden quantities behind `simulate_funnel(**kwargs)`'s rows (same arguments), for
    checking a world against its design: "interactions" [T, n] (each stage's standardised
    user x item interaction; s_a = interactions[0]) and "offsets" [T, n] (each stage's logit
    without its intercept)."""
    bound = inspect.signature(simulate_funnel).bind(**kwargs)  # TypeError on an unknown name
    bound.apply_defaults()
    world, uidx, iidx = _setup(bound.arguments)
    return {
        "interactions": _interactions(world, uidx, iidx),
        "offsets": _logit_offsets(world, uidx, iidx),
    }


def simulate_funnel(
    *,
    num_rows: int,
    seed: int,
    num_stages: int = 2,
    num_users: int = 20_000,
    num_items: int = 50_000,
    zipf_exponent: float = 1.1,
    click_rate: float = 0.04,
    stage_rates: tuple[float, ...] = (0.1,),
    cascade_strength: float = 0.5,
    num_dense: int = 0,
    latent_dim: int = 8,
    noise_fields: int = 0,
    draw: int = 0,
    world: str = "cascade",
    planted_edge: str = "0->2",
) -> CTRDataset:
    """Simulate `num_rows` i.i.d. impressions of the world fixed by `seed` and the world arguments.

    `stage_rates[k]` is the target mean rate of stage k+2 among impressions that reached stage k+1
    (so one entry for 2 stages, two for 3). `draw` picks an independent sample of impressions
    from the same world (the test split is draw 1, so its rows do not depend on the training
    size). `world` picks how the stages share their hidden structure (worlds.py; a non-cascade
    world has 2 stages, `planted_edge` places the planted world's answer). Identical arguments
    give bitwise identical arrays.

    -> CTRDataset of N = num_rows rows, T = num_stages, with true_probs [N, T] (each stage's
    conditional probability, from which the labels were drawn).
    """
    world, uidx, iidx = _setup(dict(locals()))
    n = int(num_rows)
    probs = _sigmoid(world.bases[:, None] + _logit_offsets(world, uidx, iidx)).T
    probs = np.clip(probs, 1e-7, 1.0 - 1e-7)
    draws = np.random.default_rng(_stream(seed, 11, draw=draw)).random((n, num_stages))
    labels = np.cumprod(draws < probs, axis=1).astype(np.float32)

    attrs = np.concatenate(
        [np.take(world.user_table, uidx, axis=0), np.take(world.item_table, iidx, axis=0)], axis=1
    )
    names = ["101", *_USER_FIELDS, "205", *_ITEM_FIELDS, *_CROSS_FIELDS]
    col = {f: j for j, f in enumerate(names)}
    blocks = [attrs]
    for f, (uf, itf, _) in _CROSS_FIELDS.items():
        key = attrs[:, col[uf]].astype(np.int64) * world.vocab[itf] + attrs[:, col[itf]]
        blocks.append(np.take(world.cross_tables[f], key)[:, None])
    for j, v in enumerate(world.noise_vocab):
        rng = np.random.default_rng(_stream(seed, 12, j, draw=draw))
        blocks.append(rng.integers(1, v, size=(n, 1), dtype=np.int32))
        names.append(f"noise_{j}")
    fields = ALI_CCP_FIELDS + tuple(f"noise_{j}" for j in range(noise_fields))
    vocab = [world.vocab[f] for f in ALI_CCP_FIELDS] + list(world.noise_vocab)
    order = [names.index(f) for f in fields]
    sparse = np.ascontiguousarray(np.concatenate(blocks, axis=1)[:, order], dtype=np.int32)

    ud, idn = np.take(world.user_dense, uidx, axis=0), np.take(world.item_dense, iidx, axis=0)
    c = world.dense_coef
    jitter = np.random.default_rng(_stream(seed, 13, draw=draw)).uniform(
        -_DENSE_NOISE, _DENSE_NOISE, ud.shape
    )
    raw = c[0] * ud + c[1] * idn + c[2] * ud * idn + jitter
    lo, hi = world.dense_range
    dense = np.clip((raw - lo) / np.maximum(hi - lo, 1e-12), 0.0, 1.0).astype(np.float32)

    stage_names = (
        ("click", "conversion") if num_stages == 2 else ("click", "activation", "conversion")
    )
    return CTRDataset(
        sparse=sparse,
        dense=dense,
        labels=labels,
        field_names=fields,
        vocab_sizes=tuple(vocab),
        stage_names=stage_names,
        true_probs=probs.astype(np.float32),
        dense_names=tuple(f"D{j}" for j in range(num_dense)),
    )
