"""What a run leaves in its workdir, and how each piece is written and read back.

config.json            the resolved config every later step reuses
metrics.jsonl          one record per log point: phase, model, step, losses, throughput
edge_history.jsonl     edge probabilities of the search, one record per log point
architecture.json      the derived architecture: every candidate edge, probability, kept flag
                       (and, after an operator search, each edge's "op" and "op_probs")
architecture.txt       the same, readable: one grid of probabilities per task pair
models/<name>/params   trained parameters (orbax), models/<name>/train.json its stats
results.json           test metrics per model and the oracle (schema in docs/outputs.md)
Every JSON file here starts with its format version (workdir_format.py), checked on reading.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from autoheri_jax import phases
from autoheri_jax.workdir_format import read_json_file, stamp

SEARCHED = "autoheri_search"  # the relaxed supernet, kept for inspection
AUTOHERI = "autoheri"  # the derived architecture retrained from fresh weights
SELECTION = "search.select"  # checkpoints of the masked search's candidates (in training)


class MissingArtifactError(FileNotFoundError):
    """A step needs a file an earlier step writes; the message names the file and the step."""


def read_jsonl(path: Path) -> list[dict]:
    """Records of a JSON-lines file ([] if it is missing). A bad last line is a write cut short
    by a crash and is skipped; a bad earlier line raises ValueError naming file and line."""
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as e:
            if n == len(lines):
                break
            raise ValueError(f"{path}, line {n}: not JSON ({e})") from None
    return out


class Workdir:
    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()

    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    def require(self, name: str, made_by: str) -> Path:
        p = self.path(name)
        if not p.exists():
            raise MissingArtifactError(
                f"{p} is missing: run `autoheri {made_by}` on this workdir first"
            )
        return p

    def append_jsonl(self, name: str, record: dict) -> None:
        if not is_writer():
            return
        with self.path(name).open("a") as f:
            f.write(json.dumps(record) + "\n")

    @phases.timed("write")
    def write_json(self, name: str, obj: Any) -> None:
        if not is_writer():
            return
        tmp = self.path(name + ".tmp")
        tmp.write_text(json.dumps(stamp(obj), indent=2) + "\n")
        tmp.replace(self.path(name))  # atomic: a crash never leaves half a file under `name`

    def read_json(self, name: str, made_by: str) -> Any:
        """The workdir file `name` as `write_json` wrote it (format version checked, then
        dropped); MissingArtifactError naming `made_by` when it is missing."""
        return read_json_file(self.require(name, made_by))

    def save_params(self, model: str, params: Any) -> None:
        target = self.path("models", model, "params")
        target.parent.mkdir(parents=True, exist_ok=True)
        with ocp.StandardCheckpointer() as ckptr:
            ckptr.save(target, params, force=True)
            ckptr.wait_until_finished()

    def load_params(self, model: str, abstract_params: Any, made_by: str) -> Any:
        """The params `save_params` wrote; MissingArtifactError (one line naming the file) when
        they are missing, or unreadable (truncated, corrupted) or not this model's."""
        target = self.require(f"models/{model}/params", made_by)
        try:
            with ocp.StandardCheckpointer() as ckptr:
                return ckptr.restore(target, abstract_params)
        except Exception as e:
            lines = str(e).strip().splitlines()
            why = f"{type(e).__name__}: {lines[0] if lines else ''}"
            why = why if len(why) <= 160 else why[:157] + "..."
            raise MissingArtifactError(
                f"{target} is unreadable ({why}): run `autoheri {made_by}` on this workdir again"
            ) from e


def to_host(tree: Any) -> Any:
    """Numpy copy of a pytree; in a multi-process run, of the global (not local) arrays."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        return jax.tree.map(lambda x: np.asarray(multihost_utils.process_allgather(x)), tree)
    return jax.tree.map(np.asarray, jax.device_get(tree))


def is_writer() -> bool:
    """Only process 0 writes the workdir's files (orbax coordinates its own writes)."""
    return jax.process_index() == 0
