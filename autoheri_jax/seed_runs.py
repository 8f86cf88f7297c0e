"""K complete runs (search -> derive -> retrain -> evaluate) with their seeds vmapped.

The runs differ only in seeds (the study's seed k: TrainConfig seeds, and data.seed in the
"data" seed mode). Each model is trained for all the runs that still need it in one vmapped
step per group of equal specs (seed_batch.py): the search always forms one group (the data's
shapes do not depend on its seed), so does every baseline; the derived AutoHERI models share a
step where the searches kept the same edges and are trained one by one otherwise; a model
that a run's validated selection (or ablation) batch trained as one of its lanes is saved from
there (experiment.save_lane_models) and not trained again. Every run's
workdir ends up holding what `experiment.run` writes (params, train.json, metrics.jsonl,
architecture.json, results.json), so `autoheri evaluate`, `report` and the study read it alike;
train.json records `"launcher": "vmap"` and the group's size and time. A group checkpoints all
its seeds together in the first run's `checkpoints/<model>.seeds-<s1-s2-...>` (dropped once
every seed's params are written), so a study killed mid-group resumes the group on rerun.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence

from autoheri_jax import artifacts, experiment
from autoheri_jax.artifacts import model_files
from autoheri_jax.config import Config, arch_settings
from autoheri_jax.data.sources import Splits
from autoheri_jax.progress import say
from autoheri_jax.train.checkpoint_hook import Resumable, seeds_fingerprint
from autoheri_jax.train.seed_batch import group_by_spec, train_seeds
from autoheri_jax.train.step import abstract_state, count_params


def _vmappable(cfg: Config) -> bool:
    """One device and no bi-level search: what seed_batch supports."""
    arch = arch_settings(cfg.edge_search)
    return cfg.parallel.num_devices <= 1 and not (arch is not None and arch.bilevel)


def _train_model(
    cfgs: Sequence[Config],
    wds: Sequence[artifacts.Workdir],
    datas: Sequence[Splits],
    name: str,
    phase: str,
    specs: Sequence,
    progress: bool,
    extras: Sequence[dict] | None = None,
    tcfgs: Sequence | None = None,
) -> list:
    """Model `name` of every run: reused where trained, else vmapped per group of equal specs
    (a group of one, or a run seed_batch cannot take, trains alone); `tcfgs` default to each
    config's `phase` section. -> params per run."""
    tcfgs = [getattr(c, phase) for c in cfgs] if tcfgs is None else tcfgs
    params: list = [
        model_files.trained_params(wd, name, phase, spec, t)
        for wd, spec, t in zip(wds, specs, tcfgs, strict=True)
    ]
    todo = [i for i, p in enumerate(params) if p is None]
    for group in group_by_spec([specs[i] for i in todo]):
        runs = [todo[g] for g in group]
        if len(runs) == 1 or not all(_vmappable(cfgs[i]) for i in runs):
            for i in runs:
                extra = None if extras is None else extras[i]
                params[i] = experiment.train_and_save(
                    cfgs[i], wds[i], name, phase, specs[i], tcfgs[i], datas[i], progress, extra
                )
            continue
        spec = specs[runs[0]]
        counts = count_params(abstract_state(spec, tcfgs[runs[0]]).params)
        say(f"[{phase}] {name}: {len(runs)} seeds in one vmapped step; params {counts} each")
        loggers = [model_files.ModelLog(wds[i], name, phase, spec) for i in runs]
        lane_cfgs = [tcfgs[i] for i in runs]
        # the group's checkpoints hold every seed; another grouping of the seeds starts afresh
        group_dir = wds[runs[0]].path(
            "checkpoints", f"{name}.seeds-{'-'.join(str(t.seed) for t in lane_cfgs)}"
        )
        resumable = Resumable(
            directory=group_dir,
            cfg=cfgs[runs[0]].checkpoint,
            extra={"phase": phase, "model": name, "seeds": [t.seed for t in lane_cfgs]},
            fingerprint=seeds_fingerprint(spec, lane_cfgs),
        )

        def on_resume(step: int, loggers=loggers) -> None:
            say(f"[{phase}] {name}: resuming the vmapped seeds from step {step}")
            for log in loggers:
                log.resumed(step)

        try:
            trained = train_seeds(
                spec,
                lane_cfgs,
                [datas[i].train for i in runs],
                desc=f"{phase}:{name}",
                on_logs=loggers,
                progress=progress,
                resumable=resumable,
                on_resume=on_resume,
                valids=[datas[i].valid for i in runs],
            )
        finally:
            for log in loggers:
                log.close()
        for i, (state, stats) in zip(runs, trained, strict=True):
            params[i] = model_files.save_trained(cfgs[i], wds[i], name, phase, spec, state, stats)
        if not cfgs[runs[0]].checkpoint.keep_after_finish and artifacts.is_writer():
            shutil.rmtree(group_dir, ignore_errors=True)  # every seed's params are the record
    return params


def run_seeds(
    cfgs: Sequence[Config], wds: Sequence[artifacts.Workdir], progress: bool = True
) -> list[dict]:
    """Runs every config in its workdir (resuming what each has done); -> results per run.

    The steps of `experiment.run`, each taken for every run before the next: `prepare`
    (config.json, the data, the supernet's spec), the supernet trained (vmapped over the
    runs), `derive` (the record, and the lanes its batch saves as models), each model of
    `model_configs` retrained (vmapped) with `checkpoint_extra`, then `evaluate`."""
    prepared = [experiment.prepare(c, wd, progress) for c, wd in zip(cfgs, wds, strict=True)]
    datas = [data for data, _, _ in prepared]
    specs = [spec for _, spec, _ in prepared]
    searched = [None] * len(cfgs)  # the ablation search trains its candidates, no supernet
    if experiment.trains_supernet(cfgs[0]):
        searched = _train_model(
            cfgs,
            wds,
            datas,
            artifacts.SEARCHED,
            "search",
            specs,
            progress,
            tcfgs=[t for _, _, t in prepared],
        )
    # a run derived before keeps its record (and the lanes its selection saved as models);
    # the others derive one by one, each saving its selection's lanes as its models
    records = [
        experiment.derive(cfg, wd, spec, params, data)
        for cfg, wd, spec, params, data in zip(cfgs, wds, specs, searched, datas, strict=True)
    ]
    models = [experiment.model_configs(c, r) for c, r in zip(cfgs, records, strict=True)]
    for name in models[0]:
        specs = [experiment.spec_for(m[name], d.train) for m, d in zip(models, datas, strict=True)]
        extras = [experiment.checkpoint_extra(name, r) for r in records]
        _train_model(cfgs, wds, datas, name, "retrain", specs, progress, extras)
    return [experiment.evaluate(c, wd) for c, wd in zip(cfgs, wds, strict=True)]
