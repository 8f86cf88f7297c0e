"""A raw-Ali-CCP-shaped directory of N impressions, written in blocks, with each impression's
true probabilities beside it: the input of benchmarks/scale.py.

Command:
  python benchmarks/scale_data.py --rows 1000000 --out /data/scale_1m [--seed 0]

Files (the layout `autoheri prepare` reads for raw Ali-CCP, train and test halves):
  sample_skeleton_{train,test}.csv   sample_id, click, conversion, common key, n, features
  common_features_{train,test}.csv   common key, n, features (one row per ~50 impressions)
  truth_{train,test}.f32             float32 [rows, 2]: P(click), P(conversion | click), in
                                     skeleton order
  world.json                         the generator's settings and the rows written per split

The world: a pool of users (the 9 single-valued user fields, 101 the user id, and the four
user bags 109_14 / 110_14 / 127_14 / 150_14 with ~10-300 entries) and a pool of items (the 8
single-valued item fields, 205 the item id, and the 210 / 853 bags), ids drawn Zipf-like over
the real fields' id ranges. Each impression is one item shown to one user of its common row;
its click and post-click conversion probabilities are sigmoids of a base plus a dot product
of the user's and the item's latent factors (one factor pair per stage, correlated so the
stages share structure), the bases set for Ali-CCP's rates (3.9% clicks, 0.55% of them
convert). Labels are Bernoulli draws of those probabilities.

Memory is bounded by the pools (pre-formatted lines, about 10 kB per user and 0.3 kB per item)
and one block of impressions, whatever --rows is; disk is about 350 bytes an impression.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

ITEM = {
    "205": 4_000_000,
    "206": 10_000,
    "207": 500_000,
    "216": 200_000,
    "508": 10_000,
    "509": 200_000,
    "702": 200_000,
    "301": 3,
}
ITEM_BAGS = {"210": (100_000, 1, 6), "853": (100_000, 1, 4)}
USER = {
    "101": 300_000,
    "121": 100,
    "122": 15,
    "124": 3,
    "125": 8,
    "126": 4,
    "127": 4,
    "128": 3,
    "129": 5,
}
USER_BAGS = {
    "109_14": (10_000, 10, 50),
    "110_14": (500_000, 10, 100),
    "127_14": (200_000, 10, 100),
    "150_14": (50_000, 60, 300),
}
CLICK_RATE, CONVERSION_RATE = 0.039, 0.0055  # Ali-CCP: clicks per impression, conversions per click
FACTORS = 8  # latent dimension of the true world
BLOCK_COMMON_ROWS = 2_000  # common rows per written block (~100k impressions)


def _zipf_ids(rng: np.random.Generator, top: int, n: int) -> np.ndarray:
    return np.minimum(rng.zipf(1.3, n), top) - 1


def _feature(field: str, ident: int, value: str = "1.0") -> str:
    return f"{field}\x02{ident}\x03{value}"


def _pool_lines(rng, singles: dict, bags: dict, size: int) -> list[str]:
    """`size` pre-formatted 'n,features' tails: the pool's id columns first, then the bags."""
    cols = {f: _zipf_ids(rng, top, size) for f, top in singles.items()}
    first = next(iter(singles))
    cols[first] = rng.permutation(min(size, singles[first]))[np.arange(size) % singles[first]]
    out = []
    for r in range(size):
        feats = [_feature(f, int(cols[f][r])) for f in singles]
        for f, (top, lo, hi) in bags.items():
            ids = _zipf_ids(rng, top, int(rng.integers(lo, hi + 1)))
            vals = np.round(np.log1p(rng.integers(1, 20, len(ids))), 5)
            feats.extend(_feature(f, int(i), str(v)) for i, v in zip(ids, vals, strict=True))
        out.append(f"{len(feats)},{chr(1).join(feats)}")
    return out


def _logit_base(rng, scores: np.ndarray, rate: float) -> float:
    """The base b with mean sigmoid(b + scores) = rate (bisection on a sample)."""
    lo, hi = -20.0, 5.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if np.mean(1 / (1 + np.exp(-(mid + scores)))) < rate:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


class World:
    """Users and items with latent factors and pre-formatted feature lines."""

    def __init__(self, seed: int, users: int, items: int, scale: float = 1.0):
        rng = np.random.default_rng([seed, 0])
        self.user_lines = _pool_lines(rng, USER, USER_BAGS, users)
        self.item_lines = _pool_lines(rng, ITEM, ITEM_BAGS, items)
        shared = rng.normal(size=(users, FACTORS)) / np.sqrt(FACTORS)
        own = rng.normal(size=(users, FACTORS)) / np.sqrt(FACTORS)
        self.user_click, self.user_conv = shared, 0.6 * shared + 0.8 * own
        self.item_click = scale * rng.normal(size=(items, FACTORS))
        self.item_conv = scale * rng.normal(size=(items, FACTORS))
        u, i = rng.integers(0, users, 200_000), self.draw_items(rng, 200_000)
        self.click_base = _logit_base(rng, self._score(u, i, 0), CLICK_RATE)
        self.conv_base = _logit_base(rng, self._score(u, i, 1), CONVERSION_RATE)

    def draw_items(self, rng, n: int) -> np.ndarray:
        return _zipf_ids(rng, len(self.item_lines), n)

    def _score(self, u: np.ndarray, i: np.ndarray, stage: int) -> np.ndarray:
        if stage == 0:
            return np.einsum("nf,nf->n", self.user_click[u], self.item_click[i])
        return np.einsum("nf,nf->n", self.user_conv[u], self.item_conv[i])

    def probabilities(self, u: np.ndarray, i: np.ndarray) -> np.ndarray:
        """[n, 2] float32: P(click), P(conversion | click)."""
        z = np.stack(
            [self.click_base + self._score(u, i, 0), self.conv_base + self._score(u, i, 1)], axis=1
        )
        return (1 / (1 + np.exp(-z))).astype(np.float32)


def _write_split(world: World, root: Path, split: str, rows: int, rng, first_sid: int) -> dict:
    """Appends `rows` impressions in blocks; -> counts. Holds one block at a time."""
    written = clicks = conversions = common = 0
    with (
        (root / f"common_features_{split}.csv").open("w") as cf,
        (root / f"sample_skeleton_{split}.csv").open("w") as sf,
        (root / f"truth_{split}.f32").open("wb") as tf,
    ):
        while written < rows:
            sizes = rng.integers(1, 100, BLOCK_COMMON_ROWS)
            sizes = sizes[np.cumsum(sizes) - sizes < rows - written]
            sizes[-1] = min(sizes[-1], rows - written - int(sizes[:-1].sum()))
            n, keys = int(sizes.sum()), rng.integers(0, 2**63, len(sizes), dtype=np.int64)
            users = rng.integers(0, len(world.user_lines), len(sizes))
            cf.writelines(
                f"{k:016x},{world.user_lines[u]}\n" for k, u in zip(keys, users, strict=True)
            )
            user_of_row, key_of_row = np.repeat(users, sizes), np.repeat(keys, sizes)
            items = world.draw_items(rng, n)
            probs = world.probabilities(user_of_row, items)
            click = rng.random(n) < probs[:, 0]
            conv = click & (rng.random(n) < probs[:, 1])
            sids = range(first_sid + written, first_sid + written + n)
            sf.writelines(
                f"{s},{int(c)},{int(v)},{k:016x},{world.item_lines[i]}\n"
                for s, c, v, k, i in zip(sids, click, conv, key_of_row, items, strict=True)
            )
            tf.write(probs.tobytes())
            written, common = written + n, common + len(sizes)
            clicks, conversions = clicks + int(click.sum()), conversions + int(conv.sum())
    return {"rows": written, "common_rows": common, "clicks": clicks, "conversions": conversions}


def generate(root: Path, rows: int, seed: int = 0, test_share: float = 0.5) -> dict:
    """Writes the directory (see the module docstring); -> world.json's content."""
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    users, items = int(np.clip(rows // 200, 500, 20_000)), int(np.clip(rows // 50, 2_000, 400_000))
    world = World(seed, users, items)
    rng = np.random.default_rng([seed, 1])
    n_test = int(rows * test_share)
    splits = {"train": _write_split(world, root, "train", rows - n_test, rng, 0)}
    splits["test"] = _write_split(world, root, "test", n_test, rng, rows - n_test)
    info = {
        "rows": rows,
        "seed": seed,
        "users": users,
        "items": items,
        "splits": splits,
        "click_base": world.click_base,
        "conversion_base": world.conv_base,
        "bytes": sum(p.stat().st_size for p in root.iterdir() if p.is_file()),
        "seconds": time.perf_counter() - t0,
    }
    (root / "world.json").write_text(json.dumps(info, indent=1))
    return info


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, required=True, help="impressions, train + test")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    info = generate(args.out, args.rows, args.seed)
    print(json.dumps(info, indent=1))
    return info


if __name__ == "__main__":
    main()
