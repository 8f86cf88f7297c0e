"""A trained model's files in a workdir: its log records while it trains, its params and
train.json once it has, and the rule for params that cannot be read back.

  metrics.jsonl / edge_history.jsonl / tb/<phase>_<name>   written by ModelLog while training
  models/<name>/params, models/<name>/train.json           written by save_trained
  checkpoints/<name>                                       dropped once the params are written
"""

from __future__ import annotations

import json
import re
import shutil

from autoheri_jax import artifacts, phases
from autoheri_jax.artifacts import tensorboard
from autoheri_jax.config import Config, TrainConfig
from autoheri_jax.model.spec import ModelSpec
from autoheri_jax.progress import say as _say
from autoheri_jax.train.signals import deferred
from autoheri_jax.train.step import abstract_state


def _drop_later_records(wd: artifacts.Workdir, model: str, step: int) -> None:
    """A resumed model re-logs the steps after its checkpoint: drop the first telling of them."""
    for name in ("metrics.jsonl", "edge_history.jsonl"):
        path = wd.path(name)
        if not path.exists() or not artifacts.is_writer():
            continue
        records = artifacts.read_jsonl(path)
        keep = [r for r in records if not (r["model"] == model and r["step"] > step)]
        path.write_text("".join(json.dumps(r) + "\n" for r in keep))


class ModelLog:
    """A model's log records into the workdir: metrics.jsonl, edge_history.jsonl and
    TensorBoard scalars (`tensorboard --logdir <workdir>/tb`). Called as on_log(step, record)."""

    def __init__(self, wd: artifacts.Workdir, name: str, phase: str, spec: ModelSpec):
        self.wd, self.name, self.phase, self.spec = wd, name, phase, spec
        # a lane's name ("select:none", "ablation:only:0.1->1.0") is a plain directory name
        self.tb = tensorboard.ScalarWriter(
            wd.path("tb", re.sub(r"[^\w.-]", "_", f"{phase}_{name}"))
        )

    def __call__(self, step: int, rec: dict) -> None:
        probs = rec.pop("edge_probs")
        self.wd.append_jsonl("metrics.jsonl", {"phase": self.phase, "model": self.name, **rec})
        scalars = tensorboard.flatten_scalars(rec)  # loss, stage_bce/<i>, entropy, examples_per_s
        if self.spec.has_arch:
            named = {e.name: p for e, p in zip(self.spec.edges, probs, strict=True)}
            record = {"model": self.name, "step": step, "probs": named}
            self.wd.append_jsonl("edge_history.jsonl", record)
            scalars |= {f"edge_prob/{edge}": p for edge, p in named.items()}
        if artifacts.is_writer():
            self.tb.scalars(scalars, step)  # the first write of a fresh run drops older files

    def resumed(self, step: int) -> None:
        """Training resumed from the checkpoint at `step`: the steps after it are logged
        again, so their first telling goes (JSON lines) or is purged (TensorBoard)."""
        _drop_later_records(self.wd, self.name, step)
        if artifacts.is_writer():
            self.tb.start(resumed_at=step + 1)

    def close(self) -> None:
        self.tb.close()


def trained_params(wd: artifacts.Workdir, name: str, phase: str, spec, tcfg: TrainConfig):
    """The params of a model this workdir already trained (None if it has not). Params that
    cannot be read (missing, corrupted) are moved aside, models/<name> -> models/<name>.invalid-<n>,
    with one warning line, and None returned: the model is trained again (from its checkpoints
    when they were kept)."""
    if not wd.path("models", name, "train.json").exists():
        return None
    try:
        params = wd.load_params(name, abstract_state(spec, tcfg).params, made_by=phase)
    except artifacts.MissingArtifactError as e:
        from autoheri_jax.progress import get_logger

        model_dir, n = wd.path("models", name), 0
        while (aside := model_dir.with_name(f"{name}.invalid-{n}")).exists():
            n += 1
        if artifacts.is_writer() and model_dir.exists():
            model_dir.rename(aside)
        if not wd.path("checkpoints", name).is_dir():  # retrained from step 0: logged anew
            _drop_later_records(wd, name, -1)
        what = str(e).partition(": run `")[0]  # the file and its problem, not the hint
        get_logger(__name__).warning(
            f"[{phase}] {name}: {what}; moved {model_dir} to {aside}, training the model again"
        )
        return None
    _say(f"[{phase}] {name}: already trained in {wd.root}; reusing it")
    return params


@phases.timed("write")
def save_trained(
    cfg: Config,
    wd: artifacts.Workdir,
    name: str,
    phase: str,
    spec,
    state,
    stats: dict,
    source: dict | None = None,
):
    """Writes a trained model's params (`state.params`) and train.json, drops its
    checkpoints; -> params (`save_model`)."""
    return save_model(cfg, wd, name, phase, spec, state.params, stats, source)


def save_model(
    cfg: Config,
    wd: artifacts.Workdir,
    name: str,
    phase: str,
    spec,
    params,
    stats: dict,
    source: dict | None = None,
):
    """Writes a trained model's params and train.json, drops its checkpoints; -> params.

    `source` (train.json's "source", results.json's per model) says which training made the
    params: {"training": phase} for a model trained alone (or with its vmapped seeds), or a
    lane of the search's architecture batch ({"training": "selection" | "ablation", "lane",
    "lanes"}: see experiment.save_lane_models)."""
    params = artifacts.to_host(params)
    source = {"training": phase, "lane": None} if source is None else source
    # train.json marks the params complete, so a signal waits until both are written; the
    # checkpoints go only after that (a crash before it resumes from them)
    with deferred(f"saving models/{name}"):
        wd.save_params(name, params)
        edges = [e.name for e in spec.edges]
        wd.write_json(f"models/{name}/train.json", {**stats, "edges": edges, "source": source})
    if not cfg.checkpoint.keep_after_finish and artifacts.is_writer():
        shutil.rmtree(wd.path("checkpoints", name), ignore_errors=True)  # params are the record
    if source["lane"] is not None:
        _say(
            f"[{phase}] {name}: the {source['training']} batch's lane {source['lane']!r}, "
            "trained once there; not retrained"
        )
        return params
    _say(
        f"[{phase}] {name}: {stats['steps'] - stats['resumed_at']} steps in "
        f"{stats['seconds']:.1f}s ({stats['examples_per_s']:,.0f} examples/s)"
    )
    return params
