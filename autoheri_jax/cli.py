"""`autoheri` command line: a thin shell over experiment.py.

  autoheri run      --config FILE --workdir DIR [--set key=value ...]   search, retrain, evaluate
  autoheri search   --config FILE --workdir DIR [--set ...]             search + derive
  autoheri retrain  --workdir DIR                                       derived model + baselines
  autoheri evaluate --workdir DIR                                       results.json + table
  autoheri prepare  --data PATH --out STORE [--format NAME] [...]      files -> columnar store
  autoheri evolve   --config FILE --workdir DIR [--set ...]             evolutionary search
  autoheri study    --config STUDY --workdir DIR [--seeds K]            arms x seeds, t-tests
  autoheri report   DIR                                                 figures + report.md
  autoheri export   --workdir DIR [--model NAME] --out EXPORT_DIR       a servable model
  autoheri predict  --model EXPORT_DIR --data PATH --out FILE [...]     scores to CSV / Parquet

`evolve` writes the same architecture.json as `search` (then `retrain`, `evaluate` as usual);
`study` takes a study file (experiments/studies/*.py, `get_study()`), not a config.

run / search / evolve take `--data PATH [--format NAME]` to train on files instead of the
simulator: raw Ali-CCP, the peers' processed formats (torch-rechub, PaddleRec AITM / ESMM,
MTReclib AliExpress) or a prepared store; the format is detected when it is unambiguous.

A store is checked whenever it is opened (column sizes and shapes, label and id ranges) and
hashed against its manifest once per workdir; `--verify` (the steps and predict) hashes it again.

Expected failures (bad config, missing files, non-finite loss, a modified store, a config file
that does not import, a read-only or full place) print one line naming the key, file or step
and exit with status 2; no traceback (errors.py). `--debug` (or AUTOHERI_DEBUG=1) restores the
traceback. SIGINT / SIGTERM anywhere a run can be exit 128 + the signal, with the resume hint.

Every command takes `--quiet`: no status lines and no progress lines, errors still shown. Status
lines go through the "autoheri_jax" logger (progress.py: stdout by default, data preparation and
errors on stderr), so a caller of main() can silence or redirect them with `logging`.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path

from autoheri_jax.config import DATA_FORMATS, ConfigError, DataConfig, load_config
from autoheri_jax.errors import (
    DEBUG_ENV,
    RESUME_HINT,
    exit_code,
    one_line,
    one_line_errors,
    terminating,
)
from autoheri_jax.progress import PACKAGE, get_logger

# Results and errors both go through the logger (results INFO -> stdout, errors ERROR -> stderr,
# by default): one place to silence or redirect everything, and --quiet (WARNING) keeps errors.
# argparse's own usage errors stay argparse's (stderr, exit 2): they come before any logging.
_log = get_logger("autoheri_jax.cli")  # not __name__: that is "__main__" under python -m

_STEPS = ("run", "search", "retrain", "evaluate", "evolve")


def enable_compilation_cache() -> None:
    """Persistent XLA cache: repeated runs and test sessions skip recompiling the same steps."""
    import jax

    cache = os.environ.get(
        "AUTOHERI_JAX_CACHE", str(Path.home() / ".cache" / "autoheri_jax" / "xla")
    )
    if cache and cache != "off":
        jax.config.update("jax_compilation_cache_dir", cache)
        # every executable, not only the slow ones: a run compiles ~170 small eager ops and
        # helpers (0.05-0.3 s each on CPU), about half its compile time (study_base, 2 cores)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


_STEP_HELP = {
    "run": "search, retrain and evaluate: the whole experiment in one workdir (resumable)",
    "search": "train the supernet and derive the architecture (architecture.json)",
    "retrain": "train the derived model and the baselines from fresh weights",
    "evaluate": "score every trained model on the test split (results.json)",
    "evolve": "evolutionary architecture search (the paper's comparator to one-shot)",
}


class _HELP_FORMAT(argparse.HelpFormatter):
    """Shows each optional flag's default where it has one worth showing (not None/False)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        d = action.default  # by identity: a default of 0 is worth showing, False is not
        shown = not (d is None or d is False or d is argparse.SUPPRESS or d == [])
        if shown and action.option_strings and "%(default)" not in text:
            text += " (default: %(default)s)"
        return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autoheri",
        description="AutoHERI (CIKM 2021) in JAX: one-shot search of cross-task representation "
        "edges for entire-space CTR/CVR models, with the paper's comparators, studies, export.",
        epilog="`autoheri COMMAND --help` describes a command's flags. Quick start: "
        "autoheri run --config experiments/configs/default.py --workdir runs/default",
    )
    parser.add_argument(  # also accepted after the command (the same flag in `common`)
        "-q",
        "--quiet",
        dest="quiet_first",
        action="store_true",
        help="no status or progress lines; errors still shown",
    )
    sub = parser.add_subparsers(dest="step", required=True, metavar="COMMAND")
    # flags every command takes, given after the command as --no-progress is
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="no status or progress lines (the autoheri_jax logger at WARNING); errors still shown",
    )
    common.add_argument(
        "--debug",
        action="store_true",
        help=f"full tracebacks instead of one-line errors (or {DEBUG_ENV}=1)",
    )
    prep = sub.add_parser(
        "prepare",
        parents=[common],
        help="convert data files into a memory-mapped store",
        formatter_class=_HELP_FORMAT,
    )
    prep.add_argument("--data", required=True, help="raw Ali-CCP dir, or a peer format's file/dir")
    prep.add_argument("--out", required=True, help="store directory to write")
    prep.add_argument(
        "--format", default="auto", choices=DATA_FORMATS, help="input format (auto: detected)"
    )
    prep.add_argument("--min-count", type=int, default=10, help="rarer train ids map to 0")
    prep.add_argument(
        "--valid-fraction", type=float, default=0.1, help="share of train rows carved as valid"
    )
    prep.add_argument("--seed", type=int, default=0, help="seed of the validation carve")
    prep.add_argument(
        "--on-bad-row",
        choices=("strict", "skip"),
        default="strict",
        help="strict: stop at the first bad row naming FILE:LINE; skip: drop and count them",
    )
    prep.add_argument("--no-progress", action="store_true", help="no progress line")
    for step in _STEPS:
        p = sub.add_parser(
            step, parents=[common], help=_STEP_HELP[step], formatter_class=_HELP_FORMAT
        )
        p.add_argument("--workdir", required=True, help="where every artefact of the run lives")
        first = step in ("run", "search", "evolve")
        if first:
            p.add_argument("--data", help="train on these files (sets data.source=files)")
            p.add_argument("--format", choices=DATA_FORMATS, help="data format (default: auto)")
            p.add_argument("--on-bad-row", choices=("strict", "skip"), help="bad-row policy")
            p.add_argument(
                "--fresh",
                action="store_true",
                help="delete an earlier run's outputs in the workdir instead of resuming it",
            )
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
        p.add_argument(
            "--verify",
            action="store_true",
            help="hash every column of the --data store against its manifest (by default a "
            "workdir hashes a store once, on first use; sizes, shapes and label / id ranges are "
            "checked on every load)",
        )
    st = sub.add_parser(
        "study",
        parents=[common],
        help="every arm x seed of a study file, then mean +- std, t-tests",
    )
    st.add_argument("--config", required=True, help="study file (experiments/studies/*.py)")
    st.add_argument("--workdir", required=True, help="holds <arm>/seed<k>/ runs and study.md")
    st.add_argument("--seeds", type=int, help="seeds per arm (default: the study's)")
    st.add_argument(
        "--vary-data", action="store_true", help="also run the seeds with data.seed varied"
    )
    st.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override the base config"
    )
    st.add_argument(
        "--vmap-seeds",
        action="store_true",
        help="train an arm's seeds together, one vmapped step per model (one-shot arms)",
    )
    st.add_argument("--no-progress", action="store_true", help="no progress line")
    ex = sub.add_parser(
        "export", parents=[common], help="a trained model -> a directory a service can load"
    )
    ex.add_argument("--workdir", required=True, help="a workdir of `autoheri run`")
    ex.add_argument("--model", default="autoheri", help="which trained model (default autoheri)")
    ex.add_argument("--out", required=True, help="export directory to write (replaced if one)")
    ex.add_argument(
        "--allow-unfinished",
        action="store_true",
        help="export a model without test metrics (not evaluated, or the supernet); the "
        "manifest records it as unfinished",
    )
    pr = sub.add_parser(
        "predict", parents=[common], help="score a data file with an exported model"
    )
    pr.add_argument("--model", required=True, metavar="EXPORT_DIR", help="an `autoheri export`")
    pr.add_argument("--data", required=True, help="a file of any supported format, or a store")
    pr.add_argument("--format", default="auto", choices=DATA_FORMATS)
    pr.add_argument("--split", default="test", help="split of a store to score (default test)")
    pr.add_argument("--on-bad-row", choices=("strict", "skip"), default="strict")
    pr.add_argument("--batch-size", type=int, default=4096)
    pr.add_argument("--out", required=True, help="scores to write: FILE.csv or FILE.parquet")
    pr.add_argument("--no-progress", action="store_true")
    pr.add_argument("--verify", action="store_true", help="hash every column of a --data store")
    rep = sub.add_parser(
        "report", parents=[common], help="figures and a markdown page in DIR/report/"
    )
    rep.add_argument("workdir", metavar="DIR", help="a workdir of `autoheri run` (or a study)")
    return parser


def _report(args: argparse.Namespace) -> int:
    from autoheri_jax.report.inputs import ReportError
    from autoheri_jax.report.page import render

    try:
        page, skipped = render(args.workdir)
    except ReportError as e:
        _log.error(f"autoheri report: error: {e}")
        return 2
    for figure, why in skipped.items():
        _log.info(f"autoheri report: {figure}.png skipped: {why}")
    _log.info(f"autoheri report: done; {page}")
    return 0


def _study(args: argparse.Namespace) -> int:
    from autoheri_jax.study import load_study, run_study, with_base_overrides

    study = with_base_overrides(load_study(args.config), args.set)
    modes = tuple(dict.fromkeys([*study.seed_modes, *(["data"] if args.vary_data else [])]))
    enable_compilation_cache()
    run_study(
        study,
        args.workdir,
        seeds=args.seeds,
        modes=modes,
        progress=not args.no_progress,
        vmap_seeds=args.vmap_seeds,
    )
    _log.info(f"autoheri study: done; study.md in {Path(args.workdir).resolve()}")
    return 0


def _prepare(args: argparse.Namespace) -> int:
    from autoheri_jax.data.sources import prepare_store
    from autoheri_jax.data.store import read_manifest

    d = DataConfig(
        source="files",
        path=str(args.data),
        format=args.format,
        min_count=args.min_count,
        valid_fraction=args.valid_fraction,
        seed=args.seed,
        on_bad_row=args.on_bad_row,
    )
    out = prepare_store(d, Path(args.out).resolve(), progress=not args.no_progress)
    manifest = read_manifest(out)
    rows = {k: v["rows"] for k, v in manifest["splits"].items()}
    bad = manifest.get("bad_rows", {})
    _log.info(f"autoheri prepare: store {out}: rows {rows}, bad rows {bad}")
    return 0


def _serving(args: argparse.Namespace) -> int:
    """export / predict: their own errors (export directory, data) exit 2 with one line
    (_verified)."""
    if args.step == "export":
        from autoheri_jax.exporting import export_workdir

        out = export_workdir(args.workdir, args.model, args.out, args.allow_unfinished)
        _log.info(f"autoheri export: done; {args.model} of {args.workdir} in {out}")
        return 0
    from autoheri_jax.serving.predict import predict_file
    from autoheri_jax.serving.runtime import load

    enable_compilation_cache()
    opts = {
        "fmt": args.format,
        "on_bad_row": args.on_bad_row,
        "split": args.split,
        "batch_size": args.batch_size,
        "progress": not args.no_progress,
    }
    model = load(args.model)
    if why := model.manifest.get("unfinished"):
        _log.warning(f"autoheri predict: {args.model} was exported unfinished: {why}")
    summary = predict_file(model, args.data, args.out, **opts)
    skipped = f", bad rows skipped {summary['bad_rows']}" if summary["bad_rows"] else ""
    _log.info(
        f"autoheri predict: done; {summary['rows']} rows ({summary['format']}) scored in "
        f"{summary['seconds']:.1f}s{skipped} -> {summary['out']}"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.quiet = args.quiet or args.quiet_first
    args.debug = getattr(args, "debug", False) or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    if not args.quiet:
        return _verified(args)
    # --quiet: WARNING for this command only (main() is also called in-process: tests, notebooks)
    log = logging.getLogger(PACKAGE)
    level = log.level
    log.setLevel(logging.WARNING)
    args.no_progress = True  # the progress lines (stderr, not logged) go too
    try:
        return _verified(args)
    finally:
        log.setLevel(level)


def _verified(args: argparse.Namespace) -> int:
    """--verify: every store the command opens is hashed, whatever its workdir recorded.
    Every failure a user can cause ends here as one line and exit status 2 (errors.py), a
    signal as 128 + its number with the resume hint; --debug re-raises instead."""
    from autoheri_jax.data.integrity import verifying

    try:
        with (
            verifying(getattr(args, "verify", False)),
            terminating(args.step),
            one_line_errors(args.debug),
        ):
            return _main(args)
    except Exception as e:
        if args.debug or (code := exit_code(e)) is None:
            raise  # --debug, or a bug (not a user's error): the traceback is the report
        _log.error(f"autoheri {args.step}: {one_line(e)}")
        return code
    except KeyboardInterrupt:  # outside training and saves: nothing half-written to report
        if args.debug:
            raise
        _log.error(f"autoheri {args.step}: SIGINT; {RESUME_HINT}")
        return 128 + signal.SIGINT


def _main(args: argparse.Namespace) -> int:
    if args.step in ("export", "predict"):
        return _serving(args)
    from autoheri_jax.artifacts import Workdir

    if args.step == "prepare":
        return _prepare(args)
    if args.step == "study":
        with _writing(args.workdir, args.step):
            return _study(args)
    if args.step == "report":
        return _report(args)
    overrides = list(args.set)
    if getattr(args, "data", None):
        overrides += ["data.source=files", f"data.path={Path(args.data).resolve()}"]
    if getattr(args, "format", None):
        overrides.append(f"data.format={args.format}")
    if getattr(args, "on_bad_row", None):
        overrides.append(f"data.on_bad_row={args.on_bad_row}")
    cfg = load_config(args.config, overrides) if args.config else None
    if cfg is not None:  # a prepared store's own options win, recorded (sources.py)
        from autoheri_jax.data.sources import with_store_options

        cfg = with_store_options(cfg)
    if cfg is None and args.set:
        raise ConfigError("--set needs --config (a searched workdir keeps its config)")
    enable_compilation_cache()
    if cfg is not None:
        from autoheri_jax.train.parallel import init_distributed

        init_distributed(cfg.parallel)
    wd = Workdir(args.workdir)
    progress = not args.no_progress
    from autoheri_jax import phases

    with _writing(wd.root, args.step), phases.clock() as seconds:
        _run_step(args, cfg, wd, progress)
    _log.info(f"autoheri {args.step}: time by phase: {phases.render(seconds())}")
    _log.info(f"autoheri {args.step}: done; artefacts in {Path(args.workdir).resolve()}")
    return 0


def _writing(workdir: str | Path, step: str):
    """The workdir's one-writer lock (workdir_lock.py), taken by the process that writes it."""
    import contextlib

    from autoheri_jax.artifacts import is_writer
    from autoheri_jax.workdir_lock import exclusive

    if not is_writer() or (step in ("retrain", "evaluate") and not Path(workdir).is_dir()):
        return contextlib.nullcontext()  # (a mistyped workdir is not created: the step names it)
    return exclusive(workdir, f"autoheri {step}")


def _run_step(args: argparse.Namespace, cfg, wd, progress: bool) -> None:
    from autoheri_jax import experiment

    if args.step == "run":
        experiment.run(cfg, wd, progress, fresh=args.fresh)
    elif args.step == "search":
        experiment.search(cfg, wd, progress, fresh=args.fresh)
    elif args.step == "evolve":
        from autoheri_jax.evolution_run import evolve

        evolve(cfg, wd, progress, fresh=args.fresh)
    elif args.step == "retrain":
        experiment.retrain(experiment.saved_config(wd, cfg), wd, progress)
    else:
        experiment.evaluate(experiment.saved_config(wd, cfg), wd)


if __name__ == "__main__":
    sys.exit(main())
