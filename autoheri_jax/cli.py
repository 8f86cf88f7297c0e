"""`autoheri` command line: a thin shell over experiment.py.

  autoheri run      --config FILE --workdir DIR [--set key=value ...]   search, retrain, evaluate
  autoheri search   --config FILE --workdir DIR [--set ...]             search + derive
  autoheri retrain  --workdir DIR                                       derived model + baselines
  autoheri evaluate --workdir DIR                                       results.json + table

Expected failures (bad config, missing files, non-finite loss) print one line naming the key,
file or step and exit with status 2; no traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from autoheri_jax.config import ConfigError, load_config

_STEPS = ("run", "search", "retrain", "evaluate")


def enable_compilation_cache() -> None:
    """Persistent XLA cache: repeated runs and test sessions skip recompiling the same steps."""
    import jax

    cache = os.environ.get(
        "AUTOHERI_JAX_CACHE", str(Path.home() / ".cache" / "autoheri_jax" / "xla")
    )
    if cache and cache != "off":
        jax.config.update("jax_compilation_cache_dir", cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="autoheri", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="step", required=True)
    for step in _STEPS:
        p = sub.add_parser(step)
        p.add_argument("--workdir", required=True, help="where every artefact of the run lives")
        first = step in ("run", "search")
        p.add_argument(
            "--config",
            required=first,
            help="experiment file (experiments/configs/*.py) or config.json"
            + ("" if first else "; default: the workdir's config.json"),
        )
        p.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="override a config field, e.g. --set search.epochs=1",
        )
        p.add_argument("--no-progress", action="store_true", help="no progress line")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from autoheri_jax import experiment
    from autoheri_jax.artifacts import MissingArtifactError, Workdir
    from autoheri_jax.train import NonFiniteLossError

    try:
        cfg = load_config(args.config, args.set) if args.config else None
        if cfg is None and args.set:
            raise ConfigError("--set needs --config (a searched workdir keeps its config)")
        enable_compilation_cache()
        wd = Workdir(args.workdir)
        progress = not args.no_progress
        if args.step == "run":
            experiment.run(cfg, wd, progress)
        elif args.step == "search":
            experiment.search(cfg, wd, progress)
        elif args.step == "retrain":
            experiment.retrain(experiment.saved_config(wd, cfg), wd, progress)
        else:
            experiment.evaluate(experiment.saved_config(wd, cfg), wd)
    except (ConfigError, MissingArtifactError, NonFiniteLossError) as e:
        print(f"autoheri {args.step}: error: {e}", file=sys.stderr)
        return 2
    print(f"autoheri {args.step}: done; artefacts in {Path(args.workdir).resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
