"""Test-session set-up: a persistent XLA cache so reruns and CI skip recompilation."""

import os
from pathlib import Path

import jax
import pytest

_CACHE = os.environ.get("AUTOHERI_JAX_CACHE", str(Path.home() / ".cache" / "autoheri_jax" / "xla"))
if _CACHE != "off":
    jax.config.update("jax_compilation_cache_dir", _CACHE)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def repo() -> Path:
    return REPO
