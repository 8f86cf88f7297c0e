"""Small shared builders for tests."""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import numpy as np

from autoheri_jax.config import ModelConfig
from autoheri_jax.data.dataset import BagField, CTRDataset
from autoheri_jax.model.build import build_spec

VOCABS = (7, 5, 11, 3)


def child_env(devices: int | None = None) -> dict:
    """os.environ for a child process of the tests: the session's XLA_FLAGS (conftest.py's
    compile setting) without a device count, plus `devices` simulated CPU devices if given."""
    import os

    env = dict(os.environ)
    flags = [
        f
        for f in env.get("XLA_FLAGS", "").split()
        if not f.startswith("--xla_force_host_platform_device_count")
    ]
    if devices:
        flags.append(f"--xla_force_host_platform_device_count={devices}")
    env.pop("XLA_FLAGS", None)
    if flags:
        env["XLA_FLAGS"] = " ".join(flags)
    return env


def host(x) -> np.ndarray:
    """`x` as a numpy array; a typed PRNG key (dtype key<fry>, no numpy form) as its key data,
    uint32[..., 2]."""
    import jax

    if jax.dtypes.issubdtype(getattr(x, "dtype", np.float32), jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    return np.asarray(x)


def assert_trees_equal(a, b) -> None:
    """Two pytrees bitwise equal, leaf by leaf (typed keys by their key data and impl)."""
    import jax

    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        assert x.dtype == y.dtype, (x.dtype, y.dtype)
        np.testing.assert_array_equal(host(x), host(y))


def use_test_compilation_cache() -> None:
    """The tests' persistent XLA cache (AUTOHERI_JAX_CACHE, default ~/.cache/autoheri_jax/xla;
    `off` for none), every compilation kept: for the test session (conftest.py) and the test
    helpers it starts as processes, which then skip what an earlier process compiled and the
    repeats of a program within themselves."""
    import os

    import jax

    cache = os.environ.get("AUTOHERI_JAX_CACHE", str(Path.home() / ".cache/autoheri_jax/xla"))
    if cache != "off":
        jax.config.update("jax_compilation_cache_dir", cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def tiny_spec(num_tasks: int = 2, searched: bool = True, **model_kw):
    # random edge blocks, so an open edge visibly changes the downstream tower
    kw = {"embed_dim": 4, "hidden": (8, 6, 5), "edge_init": "block"}
    kw.update(model_kw)
    return build_spec(
        ModelConfig(**kw), VOCABS, num_dense=2, num_tasks=num_tasks, searched=searched
    )


def tiny_funnel(stages: int = 2):
    """(train 4000, test 1000) rows of a small learnable simulated funnel of 2 or 3 stages."""
    from autoheri_jax.data.simulator import simulate_funnel

    data = simulate_funnel(
        num_rows=5000,
        seed=0,
        num_stages=stages,
        num_users=50,
        num_items=100,
        click_rate=0.2,
        stage_rates=(0.3,) if stages == 2 else (0.4, 0.4),
        cascade_strength=0.7,
    )
    return data.split([4000, 1000])


def parallel_setup(sparse: bool = True):
    """(data, spec, cfg) of the data-parallel checks (parallel_cases.py, multihost_worker.py,
    test_parallel.py): 12 batches of 128 rows of a small funnel, towers 16-8, the search."""
    from autoheri_jax.data.simulator import simulate_funnel

    data = simulate_funnel(
        num_rows=2048,
        seed=0,
        num_users=300,
        num_items=500,
        click_rate=0.2,
        stage_rates=(0.3,),
        num_dense=2,
    )
    spec = build_spec(
        ModelConfig(embed_dim=4, hidden=(16, 8)), data.vocab_sizes, 2, 2, searched=True
    )
    cfg = gated(
        epochs=1,
        batch_size=128,
        arch_warmup_steps=0,
        lr=1e-2,
        arch_lr=5e-2,
        log_every=4,
        sparse_embeddings=sparse,
    )
    return data.take(slice(0, 128 * 12)), spec, cfg


def gated(base=None, **kw):
    """A gated supernet's SupernetConfig from TrainConfig and GradientSearch keywords, split by
    name (over `base`'s settings when given): the trainer reads the arch settings from `arch`."""
    from autoheri_jax.config import GradientSearch, SupernetConfig, method_fields

    own = method_fields(GradientSearch)
    train = {k: v for k, v in kw.items() if k not in own}
    arch = {k: v for k, v in kw.items() if k in own}
    if base is None:
        return SupernetConfig(**train, arch=GradientSearch(**arch))
    return dataclasses.replace(base, **train, arch=dataclasses.replace(base.arch, **arch))


def tiny_batch(batch: int = 16, num_tasks: int = 2, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    sparse = np.stack([rng.integers(0, v, batch) for v in VOCABS], axis=1).astype(np.int32)
    dense = rng.random((batch, 2), dtype=np.float32)
    first = rng.random(batch) < 0.5
    labels = [first]
    for _ in range(num_tasks - 1):
        labels.append(labels[-1] & (rng.random(batch) < 0.5))
    return {"sparse": sparse, "dense": dense, "labels": np.stack(labels, 1).astype(np.float32)}


def toy_dataset(n=1000, with_bags=True):
    """N rows, field "row" = row index, one bag field (150_14) of 0-5 entries, 2 stages."""
    rng = np.random.default_rng(0)
    lengths = rng.integers(0, 6, n)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    bags = (
        BagField(
            "150_14",
            50,
            offsets[:-1],
            offsets[1:],
            rng.integers(1, 50, offsets[-1]).astype(np.int32),
            rng.random(offsets[-1]).astype(np.float32),
        ),
    )
    click = rng.random(n) < 0.3
    return CTRDataset(
        sparse=np.stack([np.arange(n), rng.integers(0, 9, n)], 1).astype(np.int32),
        dense=rng.random((n, 2), dtype=np.float32),
        labels=np.stack([click, click & (rng.random(n) < 0.3)], 1).astype(np.float32),
        field_names=("row", "f"),
        vocab_sizes=(n, 9),
        stage_names=("click", "conversion"),
        bags=bags if with_bags else (),
        max_bag_len=4,
    )


def mutate_line(rng, lines, alphabet) -> bytearray:
    """A random line of `lines` with 1-2 random edits (insert, replace or delete one token of
    `alphabet`): the fuzz case of the parser-agreement tests."""
    line = bytearray(lines[int(rng.integers(0, len(lines)))])
    for _ in range(int(rng.integers(1, 3))):
        at = int(rng.integers(0, len(line)))
        op, tok = int(rng.integers(0, 3)), alphabet[int(rng.integers(0, len(alphabet)))]
        line[at : at + (op > 0)] = b"" if op == 2 else tok
    return line


class StopTraining(Exception):
    """Raised by `stop_at` to stop a run from inside its on_log callback (a crash stand-in)."""


def stop_at(when: int):
    """An on_log callback that stops the run once step `when` is logged (before its save)."""

    def on_log(step, record):
        if step == when:
            raise StopTraining

    return on_log


def load_script(path: Path):
    """The module of a script that is not in a package (experiments/*.py, benchmarks/*.py)."""
    spec = importlib.util.spec_from_file_location(Path(path).stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
