"""Resumable training checkpoints: one composite orbax checkpoint per saved step.

Layout of `<directory>/<step>/` (written by `ocp.CheckpointManager`):

  state/   the TrainState pytree (StandardSave): step, params, opt_state, rng, first_bad_step,
           row_scratch (all SCRATCH_EMPTY at a step boundary: 4 bytes per table row)
  extra/   JSON: phase, model name, architecture, config, ... plus `fingerprint`
  data/    one JSON file per process, `process_<i>-of-<n>.json`: that process's data-iterator
           state (`data_state` as passed to `save`, or null), written by grain's own
           `grain.checkpoint.CheckpointHandler`. Per process because the processes of a
           multi-process run may stop at different iterator positions (each feeds its own slice
           of every global batch); each process writes, and on restore reads back, its own.
           A checkpoint of the older layout (one JSON item `data/metadata`) is refused by
           `restore`, naming that file; it is left in place, not set aside.
  metrics/ JSON: the metrics passed to `save` (only when best-checkpoint tracking is on)

Retention: the `keep` latest checkpoints, plus the single best one by `best_metric` when
`keep_best` (a checkpoint saved without that metric never counts as best). orbax 0.12.8 turns
`max_to_keep` + `best_fn` into "the best `max_to_keep`" only, so the retention here is an
explicit preservation policy, `AnyPreservationPolicy([LatestN(keep), BestN(n=1)])`.

Crash safety: orbax writes each step into `<step>.orbax-checkpoint-tmp-*` and renames it to
`<step>` after `commit_success.txt` is written, so an interrupted save never shows up as a
step; leftover tmp directories are deleted when a Checkpointer opens the directory. A numbered
directory without the commit marker or an item (copied half-way, truncated) is renamed to
`<step>.invalid-<n>` on open, so that it can neither be restored nor confuse retention. A
complete step whose files cannot be read (truncated or corrupted on disk) is found only when it
is read: `restore_latest` then renames it the same way, says so in one warning line and falls
back to the step before it (or to none: the run starts from scratch). Only unreadable files
fall back; a checkpoint that does not fit the run (fingerprint, structure) is still refused.

Restore targets are abstract (`jax.eval_shape` output); a leaf's `sharding` decides where the
restored array lives, so a run may resume on a different device count. Leaves without one are
placed on the first device. The structure, shapes and dtypes are checked against the
checkpoint before any array is read, and the fingerprint (model shapes, config fields) before
that; each mismatch raises `CheckpointError` naming the directory, step and key.

PRNG keys are typed (`jax.random.key`, dtype key<fry>): orbax stores a key leaf as its key
data (uint32[..., 2], what its metadata shows) with the key's impl beside it, and restores it
as a typed key again. A leaf saved as raw key data (a checkpoint written before the keys were
typed) restores as uint32, so each restored leaf's dtype is checked against the target after
reading: such a checkpoint is refused rather than resumed with an untyped key.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import grain.checkpoint as grain_ckpt
import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as ocp_managers

_ITEMS = ("state", "extra", "data")
_COMMIT_MARKER = "commit_success.txt"
_STEP_NAME = re.compile(r"^(0|[1-9]\d*)$")
_DATA_FILE = re.compile(r"^process_(\d+)-of-(\d+)\.json$")  # grain's per-process file name
_OLD_DATA_FILE = "metadata"  # the older layout's single JSON item: refused, not read
_log = logging.getLogger(__name__)


class _DropNoMetricsWarning(logging.Filter):
    """orbax warns on every save without metrics while best tracking is on; that is routine
    here (metrics exist only at evaluation points), so the warning is dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "did not provide metrics" not in record.getMessage()


logging.getLogger("absl").addFilter(_DropNoMetricsWarning())


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable or does not fit this run; the message says which."""


class UnreadableCheckpointError(CheckpointError):
    """A step's files cannot be read (truncated, corrupted); `reason` is one short line."""

    def __init__(self, where: str, step: int, cause: BaseException, what: str = "is unreadable"):
        self.step, self.reason = step, _one_line(cause)
        super().__init__(f"{where} {what}: {type(cause).__name__}: {cause}")


def _one_line(e: BaseException, limit: int = 160) -> str:
    """`Type: first line of the message`, cut at `limit` characters (for a warning line)."""
    text = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _jsonable(obj: Any, what: str) -> Any:
    """`obj` as plain JSON types (tuples become lists, numpy / jax scalars numbers)."""

    def default(o: Any) -> Any:
        if isinstance(o, np.generic | np.ndarray | jax.Array):
            return np.asarray(o).tolist()
        raise TypeError(f"{type(o).__name__} {o!r}")

    try:
        return json.loads(json.dumps(obj, default=default))
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{what} is not JSON-serialisable: {e}") from e


def _data_file_name(process_index: int, process_count: int) -> str:
    """The file grain's CheckpointHandler writes for one process (its naming, repeated here)."""
    return f"process_{process_index}-of-{process_count}.json"


def _register_grain_args() -> None:
    """grain.checkpoint registers its Save / Restore args with orbax on import; make sure."""
    for args_cls, kw in (
        (grain_ckpt.CheckpointSave, {"for_save": True, "for_restore": False}),
        (grain_ckpt.CheckpointRestore, {"for_save": False, "for_restore": True}),
    ):
        try:
            registered = ocp.args.get_registered_handler_cls(args_cls)
        except ValueError:
            registered = None
        if registered is not grain_ckpt.CheckpointHandler:
            ocp.args.register_with_handler(grain_ckpt.CheckpointHandler, **kw)(args_cls)


_register_grain_args()


class _IteratorState:
    """A JSON data-iterator state dressed as an iterator for grain's CheckpointHandler.

    The loop hands `save` plain JSON (`{"train": it.get_state(), ...}`), not iterator objects.
    For anything but a `grain.DatasetIterator` the handler stores `item.get_state()` bytes
    verbatim and restores through `item.set_state(bytes)` then `item.start_prefetch()`.
    """

    def __init__(self, state: Any = None):
        self.state = state

    def get_state(self) -> bytes:
        return json.dumps(self.state, indent=1).encode()

    def set_state(self, state: bytes) -> None:
        self.state = json.loads(state.decode())

    def start_prefetch(self) -> None:
        pass


def _flatten_dict(d: Mapping, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(_flatten_dict(v, key + "."))
        else:
            out[key] = v
    return out


def _metric_key(best_metric: str, best_mode: str):
    worst = math.inf if best_mode == "min" else -math.inf

    def value(metrics: Any) -> float:
        v = metrics.get(best_metric) if isinstance(metrics, Mapping) else None
        try:
            v = float(v)
        except (TypeError, ValueError):
            return worst
        return v if math.isfinite(v) else worst

    return value


def _step_problem(path: Path) -> str | None:
    """Why the numbered directory `path` is not a complete checkpoint, or None if it is."""
    if not path.is_dir():
        return "not a directory"
    missing = [n for n in (_COMMIT_MARKER, *_ITEMS) if not (path / n).exists()]
    if not (path / "state" / "_METADATA").exists():
        missing.append("state/_METADATA")
    if (path / "data").is_dir():
        missing += _data_problem(path / "data")
    return f"missing {', '.join(missing)}" if missing else None


def _data_problem(data: Path) -> list[str]:
    """The iterator-state files missing from `data/`: every process_<i>-of-<n>.json of one n.
    A checkpoint of the older layout is complete (restore refuses it; it is not set aside)."""
    if (data / _OLD_DATA_FILE).is_file():
        return []
    counts = {int(m[2]) for p in data.iterdir() if (m := _DATA_FILE.match(p.name))}
    if len(counts) != 1:  # none, or files of different process counts
        return ["data/process_<i>-of-<n>.json"]
    (n,) = counts
    return [
        f"data/{name}" for i in range(n) if not (data / (name := _data_file_name(i, n))).is_file()
    ]


def _set_aside(path: Path) -> Path:
    """Renames `path` to the first free `<name>.invalid-<n>`; -> the new path."""
    n = 0
    while (target := path.with_name(f"{path.name}.invalid-{n}")).exists():
        n += 1
    path.rename(target)
    return target


def _quarantine_invalid_steps(directory: Path) -> list[Path]:
    moved = []
    if jax.process_index() != 0 or not directory.is_dir():
        return moved
    for path in sorted(directory.iterdir()):
        if not _STEP_NAME.match(path.name) or (problem := _step_problem(path)) is None:
            continue
        target = _set_aside(path)
        _log.warning("ignoring incomplete checkpoint %s (%s): moved to %s", path, problem, target)
        moved.append(target)
    return moved


def _everywhere(ok: bool) -> bool:
    """True when `ok` holds on every process (a step one process cannot read is dropped by all)."""
    if jax.process_count() == 1:
        return ok
    from jax.experimental import multihost_utils

    return bool(np.all(multihost_utils.process_allgather(np.asarray(ok, np.int32))))


def _leaf_names(tree: Any) -> list[tuple[str, Any]]:
    """(orbax parameter name, leaf) pairs, in tree order: 'params.towers.task_0.head.bias'."""
    names = jax.tree.leaves(ocp.tree.get_param_names(tree, include_empty_nodes=False))
    return list(zip(names, jax.tree.leaves(tree), strict=True))


def _is_key(dtype: Any) -> bool:
    return jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def _stored_form(leaf: Any) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) of a leaf as orbax stores it: a typed key's key data (uint32[..., 2])."""
    shape = tuple(np.shape(leaf))
    if _is_key(leaf.dtype):
        data = jax.eval_shape(jax.random.key_data, jax.ShapeDtypeStruct(shape, leaf.dtype))
        return tuple(data.shape), np.dtype(data.dtype)
    return shape, np.dtype(leaf.dtype)


def _describe(shape: Any, dtype: Any) -> str:
    """'float32[3]', 'key<fry>[]' (a typed key's dtype has no numpy name)."""
    return f"{dtype if _is_key(dtype) else np.dtype(dtype).name}{list(shape)}"


def _restore_target(abstract_state: Any) -> Any:
    """ShapeDtypeStructs with a sharding on every leaf (default: the first device)."""
    default = jax.sharding.make_single_device_sharding(jax.devices()[0])

    def leaf(x: Any) -> jax.ShapeDtypeStruct:
        sharding = getattr(x, "sharding", None)
        if not isinstance(sharding, jax.sharding.Sharding):
            sharding = default
        return jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=sharding)

    return jax.tree.map(leaf, abstract_state)


class Checkpointer:
    """Saves and restores (TrainState, extra JSON, data-iterator state) under one directory.

    Opening it sets aside incomplete step directories (`quarantined` lists them). keep: the
    latest steps kept (>= 1); keep_best: also keep the best step by `best_metric` of the
    metrics passed to `save`, lowest or highest as `best_mode` ("min" / "max"); async_save:
    write in the background (`wait` / `close` join it); fingerprint: JSON-able fields stored
    with every step and compared on restore (a mismatch is a CheckpointError). ValueError
    for keep < 1 or another best_mode.
    """

    def __init__(
        self,
        directory: str | Path,
        *,
        keep: int = 3,
        keep_best: bool = True,
        best_metric: str = "valid_loss",
        best_mode: str = "min",
        async_save: bool = True,
        fingerprint: dict | None = None,
    ):
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        if best_mode not in ("min", "max"):
            raise ValueError(f"best_mode must be 'min' or 'max', got {best_mode!r}")
        self.directory = Path(directory).resolve()
        self.best_metric = best_metric
        self.fingerprint = None if fingerprint is None else _jsonable(fingerprint, "fingerprint")
        self.quarantined = _quarantine_invalid_steps(self.directory)
        latest = ocp_managers.LatestN(n=keep)
        best_fn = _metric_key(best_metric, best_mode) if keep_best else None
        if keep_best:
            best = ocp_managers.BestN(
                get_metric_fn=best_fn,
                reverse=best_mode == "min",  # BestN keeps the tail of the sorted list
                n=1,
                keep_checkpoints_without_metrics=False,
            )
            policy = ocp_managers.AnyPreservationPolicy([latest, best])
        else:
            policy = latest
        options = ocp.CheckpointManagerOptions(
            best_fn=best_fn,  # also makes the manager write each step's metrics
            best_mode=best_mode,
            preservation_policy=policy,
            enable_async_checkpointing=async_save,
            cleanup_tmp_directories=True,
            create=True,
        )
        handlers = {
            "state": ocp.StandardCheckpointHandler(),
            "extra": ocp.JsonCheckpointHandler(),
            "data": grain_ckpt.CheckpointHandler(),  # one file per process
        }  # explicit handlers: a fresh manager can then read metadata of existing steps
        self._manager = ocp.CheckpointManager(
            self.directory, item_handlers=handlers, options=options
        )

    # ------------------------------------------------------------------------------ save

    def save(
        self,
        step: int,
        state: Any,
        *,
        extra: dict,
        data_state: dict | None = None,
        metrics: dict | None = None,
        force: bool = False,
    ) -> bool:
        """Writes step `step` (`state`: a pytree; `extra`: JSON-able, without "fingerprint";
        `metrics`: what best tracking ranks by); False when nothing was written.

        Without `force` a step not after the latest checkpoint is skipped; with `force` (the
        final or SIGTERM save) any step is written unless a checkpoint for it already exists.
        With async saving the arrays are copied off the device before this returns, so the
        state may be donated right after; the files are written in the background.
        CheckpointError when extra, data_state or metrics is not JSON-able or the save fails
        (a background failure surfaces in `wait`).
        """
        step = int(step)
        if "fingerprint" in extra:
            raise ValueError("extra['fingerprint'] is reserved: pass fingerprint= to Checkpointer")
        extra_json = _jsonable({**extra, "fingerprint": self.fingerprint}, "extra")
        data_json = _jsonable(data_state, "data_state")
        metrics_json = None if metrics is None else _jsonable(metrics, "metrics")
        if step in self._manager.all_steps():
            return False
        if not force and not self._manager.should_save(step):
            return False
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            extra=ocp.args.JsonSave(extra_json),
            data=grain_ckpt.CheckpointSave(_IteratorState(data_json)),
        )
        try:
            saved = self._manager.save(step, args=args, metrics=metrics_json, force=force)
        except Exception as e:
            raise CheckpointError(f"saving step {step} to {self.directory} failed: {e}") from e
        return bool(saved)

    def wait(self) -> None:
        """Blocks until background saves are committed; raises CheckpointError if one failed."""
        try:
            self._manager.wait_until_finished()
        except Exception as e:
            raise CheckpointError(f"a background save to {self.directory} failed: {e}") from e

    def close(self) -> None:
        """Waits for background saves (CheckpointError if one failed), then closes."""
        try:
            self.wait()
        finally:
            self._manager.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------------------- query

    def all_steps(self) -> list[int]:
        """Every step on disk, ascending."""
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        """The newest checkpoint (one still being written in the background included)."""
        return self._manager.latest_step()

    def best_step(self) -> int | None:
        """The step with the best `best_metric` (the latest step when best tracking is off)."""
        return self._manager.best_step()

    # --------------------------------------------------------------------------- restore

    def restore_latest(self, abstract_state: Any) -> tuple[Any, dict, dict | None] | None:
        """`restore` of the newest readable step; None when there is none (start from scratch).

        A step whose files cannot be read (UnreadableCheckpointError, on any process) is
        renamed to `<step>.invalid-<n>` and named in one warning line, which also says what
        comes next (the step before it, or a start from scratch). A step that does not fit
        this run (fingerprint, structure) raises CheckpointError as `restore` does.
        """
        self.wait()
        while steps := self.all_steps():
            try:
                restored, problem = self.restore(steps[-1], abstract_state), None
            except UnreadableCheckpointError as e:
                restored, problem = None, e
            if _everywhere(problem is None):
                return restored
            path = self.directory / str(steps[-1])
            if jax.process_index() == 0:
                reason = "unreadable on another process" if problem is None else problem.reason
                target = _set_aside(path)
                self.quarantined.append(target)
                then = (
                    f"resuming from step {steps[-2]} instead"
                    if len(steps) > 1
                    else "no earlier step is left: training starts from scratch"
                )
                _log.warning(
                    "ignoring unreadable checkpoint %s (%s): moved to %s; %s",
                    path,
                    reason,
                    target,
                    then,
                )
            if jax.process_count() > 1:
                from jax.experimental import multihost_utils

                multihost_utils.sync_global_devices(f"set aside {path}")
            self._manager.reload()
        return None

    def restore(self, step: int | None, abstract_state: Any) -> tuple[Any, dict, dict | None]:
        """(state, extra, data_state) of `step` (None: the latest), shaped like the target
        `abstract_state` (each leaf placed by its `sharding`); data_state is this process's,
        as its `save` was given it.

        Raises CheckpointError for a missing step, the older data layout, a fingerprint, tree,
        shape, dtype or key type that does not fit this run; UnreadableCheckpointError (a
        CheckpointError) when the step's files cannot be read."""
        self.wait()
        steps = self.all_steps()
        if step is None:
            if not steps:
                raise CheckpointError(f"no checkpoint in {self.directory}")
            step = steps[-1]
        elif int(step) not in steps:
            raise CheckpointError(
                f"no checkpoint for step {step} in {self.directory}; available: {steps}"
            )
        step = int(step)
        where = f"checkpoint in {self.directory} step {step}"
        data_dir = self.directory / str(step) / "data"
        mine = data_dir / _data_file_name(jax.process_index(), jax.process_count())
        if not mine.is_file() and (data_dir / _OLD_DATA_FILE).is_file():
            raise CheckpointError(
                f"{where} has the older checkpoint layout ({data_dir / _OLD_DATA_FILE}, one "
                "iterator state for every process), which this version does not read: start "
                "the run afresh (the checkpoint is left as it is)"
            )
        if not mine.is_file():
            raise CheckpointError(
                f"{where} has no data-iterator state for process {jax.process_index()} of "
                f"{jax.process_count()}: {mine} is missing"
            )
        args = {
            "extra": ocp.args.JsonRestore(),
            "data": grain_ckpt.CheckpointRestore(_IteratorState()),
        }
        try:
            meta = self._manager.restore(step, args=ocp.args.Composite(**args))
            data = meta["data"].state
        except Exception as e:
            raise UnreadableCheckpointError(where, step, e) from e
        extra = dict(meta["extra"])
        self._check_fingerprint(where, extra.get("fingerprint"))
        self._check_structure(where, step, abstract_state)
        target = _restore_target(abstract_state)
        try:
            restored = self._manager.restore(
                step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target))
            )
        except Exception as e:
            raise UnreadableCheckpointError(where, step, e) from e
        self._check_keys(where, restored["state"], abstract_state)
        return restored["state"], extra, data

    def _check_fingerprint(self, where: str, saved: Any) -> None:
        if self.fingerprint is None:
            return
        have = _flatten_dict(saved) if isinstance(saved, Mapping) else {}
        want = _flatten_dict(self.fingerprint)
        absent = "<absent>"
        diffs = [
            f"{k}={json.dumps(have.get(k, absent))}, this run has {json.dumps(want.get(k, absent))}"
            for k in sorted(set(have) | set(want))
            if have.get(k, absent) != want.get(k, absent)
        ]
        if diffs:
            raise CheckpointError(f"{where} was written with " + "; ".join(diffs))

    def _check_structure(self, where: str, step: int, abstract_state: Any) -> None:
        try:
            saved_tree = self._manager.item_metadata(step)["state"].tree
        except Exception as e:
            raise UnreadableCheckpointError(where, step, e, "has unreadable state metadata") from e
        saved = {
            m.name: m
            for m in jax.tree.leaves(saved_tree)
            if isinstance(m, ocp.metadata.ArrayMetadata)
        }
        target = _leaf_names(abstract_state)
        for name, leaf in target:
            m = saved.get(name)
            if m is None:
                raise CheckpointError(f"{where} has no state.{name}, which this run expects")
            shape, dtype = _stored_form(leaf)
            if tuple(m.shape) != shape or np.dtype(m.dtype) != dtype:
                expects = _describe(shape, dtype)
                if _is_key(leaf.dtype):
                    expects += f" (the key data of a {_describe(np.shape(leaf), leaf.dtype)})"
                raise CheckpointError(
                    f"{where} has state.{name} as {np.dtype(m.dtype).name}{list(m.shape)}, "
                    f"this run expects {expects}"
                )
        extra = sorted(set(saved) - {name for name, _ in target})
        if extra:
            raise CheckpointError(f"{where} has state.{extra[0]}, which this run does not expect")

    def _check_keys(self, where: str, restored: Any, abstract_state: Any) -> None:
        """Typed keys came back typed (the metadata shows only their key data): a leaf saved
        as raw uint32 key data where this run keeps a typed key, or the other way round, or a
        key of another impl, is refused."""
        target = _leaf_names(abstract_state)
        for (name, want), got in zip(target, jax.tree.leaves(restored), strict=True):
            if not (_is_key(want.dtype) or _is_key(got.dtype)) or got.dtype == want.dtype:
                continue
            detail = ""
            if _is_key(want.dtype) and not _is_key(got.dtype):
                detail = (
                    ": a raw key, written before this code's keys were typed; such a "
                    "checkpoint does not resume, start the run afresh"
                )
            raise CheckpointError(
                f"{where} has state.{name} as {_describe(np.shape(got), got.dtype)}, this run "
                f"expects {_describe(np.shape(want), want.dtype)}{detail}"
            )
