"""AutoHERI in JAX: one-shot search of cross-task representation edges for entire-space CVR.

The public API, for a notebook or a script (the CLI `autoheri` wraps the same calls):

    import autoheri_jax as ah

    cfg = ah.load_config("experiments/configs/default.py", ["search.max_steps=200"])
    results = ah.run(cfg, "runs/nb")              # search, derive, retrain, evaluate
    ah.export("runs/nb", "autoheri", "runs/nb/export")
    model = ah.load_exported("runs/nb/export")    # model.score(columns) serves it

Names resolve on first use, so `import autoheri_jax` stays light and no submodule imports the
package back through them.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> (module, attribute)
_EXPORTS = {
    "Config": ("autoheri_jax.config", "Config"),
    "load_config": ("autoheri_jax.config", "load_config"),
    "apply_overrides": ("autoheri_jax.config", "apply_overrides"),
    "train": ("autoheri_jax.train.loop", "train"),
    "train_model": ("autoheri_jax.train.fit", "train_model"),
    "export": ("autoheri_jax.exporting", "export_workdir"),
    "load_exported": ("autoheri_jax.serving.runtime", "load"),
    "load_study": ("autoheri_jax.study", "load_study"),
}
__all__ = ["__version__", "run", *_EXPORTS]

if TYPE_CHECKING:
    from autoheri_jax.config import Config


def run(config: Config | str | Path, workdir: str | Path, *, progress: bool = False) -> dict:
    """Search, derive, retrain and evaluate `config` (a Config or a config file) in `workdir`,
    as `autoheri run` does (the workdir's one-writer lock included); -> results.json's dict.
    A workdir that already holds a finished step resumes from it."""
    import contextlib

    from autoheri_jax import experiment
    from autoheri_jax.artifacts import Workdir, is_writer
    from autoheri_jax.config import load_config
    from autoheri_jax.data.sources import with_store_options
    from autoheri_jax.workdir_lock import exclusive

    cfg = load_config(config) if isinstance(config, (str, Path)) else config
    wd = Workdir(workdir)
    # only the process that writes the workdir holds its lock (multi-host runs)
    lock = exclusive(wd.root, "autoheri_jax.run") if is_writer() else contextlib.nullcontext()
    with lock:
        return experiment.run(with_store_options(cfg), wd, progress)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module, attr = _EXPORTS[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value  # resolve once
        return value
    raise AttributeError(f"module 'autoheri_jax' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
