"""`autoheri export` over a workdir: a trained model of an `autoheri run` into an export.

The workflow side of serving/export.py (which writes an export from a spec, params and a
dataset, and knows nothing of workdirs): it reads the workdir's config, architecture and
results, rebuilds the model's spec on the data it trained on and hands it over. It lives
beside experiment.py so that serving/ never imports the workflow above it.
"""

from __future__ import annotations

from pathlib import Path

from autoheri_jax.safe_output import refuse_overlap
from autoheri_jax.serving import runtime as rt
from autoheri_jax.serving.export import architecture_of, info_dict, write_export
from autoheri_jax.workdir_format import read_json_file


def _store_root(cfg, wd) -> Path:
    """The store a file-data workdir trained on: data.path if it is a prepared store, else
    the workdir's own conversion (the source files need not exist any more)."""
    from autoheri_jax.data.store import is_finished

    given = Path(cfg.data.path).expanduser()
    return given.resolve() if is_finished(given) else wd.path("store")


def export_workdir(
    workdir: str | Path, model: str, out: str | Path, allow_unfinished: bool = False
) -> Path:
    """The trained `model` of an `autoheri run` workdir -> an export directory at `out`.

    A model without test metrics in results.json (the run stopped before `evaluate`, or the
    supernet, which is never evaluated) is refused unless `allow_unfinished`; its manifest then
    says why in "unfinished", so nothing serves an unmeasured model unknowingly."""
    from autoheri_jax import experiment
    from autoheri_jax.artifacts import Workdir
    from autoheri_jax.config import ConfigError, to_dict
    from autoheri_jax.data.store import open_split, read_manifest
    from autoheri_jax.data.vocab import load_vocabularies
    from autoheri_jax.train.step import abstract_state

    wd = Workdir(workdir)
    refuse_overlap(out, {"the workdir": wd.root}, "--out")  # before any work: nothing to lose
    cfg = experiment.saved_config(wd, None)
    record = experiment.read_architecture(wd)
    models = experiment.model_configs(cfg, record)
    models[experiment.SEARCHED] = experiment.search_setup(cfg)[0]
    if model not in models:
        raise ConfigError(f"{wd.root} has no model {model!r}; it has {sorted(models)}")
    if cfg.data.source == "simulator":
        data, vocabs = experiment.load_data(cfg, None, progress=False).test, None
        note = {"source": "simulator", "vocabulary": "identity (ids are rows; others -> 0)"}
    else:
        root = _store_root(cfg, wd)
        refuse_overlap(out, {"the store": root}, "--out")
        manifest = read_manifest(root)
        data = open_split(root, "test", manifest)
        vocabs = load_vocabularies(root, [*data.field_names, *(b.name for b in data.bags)])
        note = {
            "source": "files",
            "store": str(root),
            "format": manifest.get("format"),
            "vocabulary": "train-only (rare or unseen ids -> 0)",
            "min_count": manifest.get("options", {}).get("min_count"),
        }
    if model == experiment.SEARCHED:  # the supernet, gated exactly as its search trained it
        spec, tcfg = experiment.supernet_spec(cfg, data)
    else:
        spec, tcfg = experiment.spec_for(models[model], data, searched=False), cfg.retrain
    made_by = "search" if model == experiment.SEARCHED else "retrain"
    params = wd.load_params(model, abstract_state(spec, tcfg).params, made_by=made_by)
    results = wd.path("results.json")
    metrics, unfinished = None, f"{results} is missing: the run was not evaluated"
    if results.is_file():
        metrics = read_json_file(results).get("models", {}).get(model, {}).get("test")
        unfinished = None if metrics else f"{results} has no test metrics of {model!r}"
    if unfinished and not allow_unfinished:
        hint = (
            ""
            if model == experiment.SEARCHED
            else f"run `autoheri evaluate --workdir {wd.root}` or "
        )
        raise rt.ExportError(
            f"{model} of {wd.root} is unfinished ({unfinished}); {hint}pass --allow-unfinished "
            "to export it with the manifest marked unfinished"
        )
    info = info_dict(model, to_dict(cfg), models[model], metrics, note)
    if unfinished:
        info["unfinished"] = unfinished
    info["workdir"] = str(wd.root)
    arch = architecture_of(spec, model, record.to_json() if model == experiment.AUTOHERI else None)
    return write_export(
        out,
        spec,
        params,
        data,
        vocabs=vocabs,
        max_bag_len=cfg.data.max_bag_len,
        info=info,
        architecture=arch,
    )
