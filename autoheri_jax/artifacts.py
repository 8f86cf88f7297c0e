"""What a run leaves in its workdir, and how each piece is written and read back.

config.json            the resolved config every later step reuses
metrics.jsonl          one record per log point: phase, model, step, losses, throughput
edge_history.jsonl     edge probabilities of the search, one record per log point
architecture.json      the derived architecture: every candidate edge, probability, kept flag
                       (and, after an operator search, each edge's "op" and "op_probs")
architecture.txt       the same, readable: one grid of probabilities per task pair
models/<name>/params   trained parameters (orbax), models/<name>/train.json its stats
results.json           test metrics per model and the oracle (schema in README.md)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from autoheri_jax.model.edges import Edge, parse_edge


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

    def write_json(self, name: str, obj: Any) -> None:
        if not is_writer():
            return
        tmp = self.path(name + ".tmp")
        tmp.write_text(json.dumps(obj, indent=2) + "\n")
        tmp.replace(self.path(name))  # atomic: a crash never leaves half a file under `name`

    def read_json(self, name: str, made_by: str) -> Any:
        return json.loads(self.require(name, made_by).read_text())

    def save_params(self, model: str, params: Any) -> None:
        target = self.path("models", model, "params")
        target.parent.mkdir(parents=True, exist_ok=True)
        with ocp.StandardCheckpointer() as ckptr:
            ckptr.save(target, params, force=True)
            ckptr.wait_until_finished()

    def load_params(self, model: str, abstract_params: Any, made_by: str) -> Any:
        target = self.require(f"models/{model}/params", made_by)
        with ocp.StandardCheckpointer() as ckptr:
            return ckptr.restore(target, abstract_params)


def architecture_record(
    edges: Sequence[Edge],
    probs: np.ndarray,
    logits: np.ndarray | None,
    threshold: float,
    task_names: Sequence[str],
    mode: str,
    op_probs: np.ndarray | None = None,
    op_names: Sequence[str] = (),
) -> dict:
    """op_probs: [E, len(op_names)] operator probabilities of an operator search; each
    candidate then records "op" (the argmax) and "op_probs" ({op: prob})."""
    candidates = []
    for k, e in enumerate(edges):
        c = {
            "edge": e.name,
            "description": e.describe(task_names),
            "prob": float(probs[k]),
            "logit": None if logits is None else float(logits[k]),
            "kept": bool(probs[k] > threshold),
        }
        if op_probs is not None:
            c["op"] = op_names[int(np.argmax(op_probs[k]))]
            c["op_probs"] = {n: float(p) for n, p in zip(op_names, op_probs[k], strict=True)}
        candidates.append(c)
    record = {
        "search_mode": mode,
        "threshold": threshold,
        "task_names": list(task_names),
        "candidates": candidates,
        "kept": [c["edge"] for c in candidates if c["kept"]],
    }
    if op_probs is not None:
        record["kept_ops"] = [c["op"] for c in candidates if c["kept"]]
    return record


def kept_edges(record: dict) -> list[Edge]:
    return [parse_edge(e) for e in record["kept"]]


def kept_ops(record: dict) -> list[str] | None:
    """Each kept edge's searched operator, or None when the search did not choose operators."""
    return record.get("kept_ops")


def render_architecture(record: dict, num_layers: int) -> str:
    """A grid per task pair: rows = upstream layer, columns = downstream layer."""
    names = record["task_names"]
    by_pair: dict[tuple[int, int], dict[tuple[int, int], dict]] = {}
    for c in record["candidates"]:
        e = parse_edge(c["edge"])
        by_pair.setdefault((e.src_task, e.dst_task), {})[(e.src_layer, e.dst_layer)] = c
    kept, total = len(record["kept"]), len(record["candidates"])
    lines = [
        f"AutoHERI derived architecture ({record['search_mode']} search): {kept} of {total} "
        f"candidate edges kept (probability > {record['threshold']})",
        "cell = edge probability; * = kept; . = not a candidate",
    ]
    for (u, d), cells in sorted(by_pair.items()):
        lines.append("")
        lines.append(f"{names[u]} (rows: layer i) -> {names[d]} (columns: layer j)")
        lines.append("        " + "".join(f"{'j=' + str(j):>9}" for j in range(num_layers)))
        for i in range(num_layers):
            row = f"  i={i:<4}"
            for j in range(num_layers):
                c = cells.get((i, j))
                row += f"{'.':>9}" if c is None else f"{c['prob']:>8.3f}{'*' if c['kept'] else ' '}"
            lines.append(row)
    if record.get("kept_ops") is not None and record["kept"]:
        lines.append("")
        lines.append("operators of the kept edges (argmax of the operator search):")
        ops = {c["edge"]: c for c in record["candidates"]}
        for name, op in zip(record["kept"], record["kept_ops"], strict=True):
            probs = " ".join(f"{k}={v:.3f}" for k, v in ops[name]["op_probs"].items())
            lines.append(f"  {name:<12} {op:<10} ({probs})")
    if not record["kept"]:
        lines.append("")
        lines.append("No edge kept: the derived model is ESMM's independent towers.")
    return "\n".join(lines) + "\n"


def to_host(tree: Any) -> Any:
    """Numpy copy of a pytree; in a multi-process run, of the global (not local) arrays."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        return jax.tree.map(lambda x: np.asarray(multihost_utils.process_allgather(x)), tree)
    return jax.tree.map(np.asarray, jax.device_get(tree))


def is_writer() -> bool:
    """Only process 0 writes the workdir's files (orbax coordinates its own writes)."""
    return jax.process_index() == 0
