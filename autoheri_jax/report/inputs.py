"""What `autoheri report` reads from a workdir: results, logs, architecture, a study.

See report.py for the figures and the study.json shape it accepts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autoheri_jax import artifacts
from autoheri_jax.model.edges import parse_edge
from autoheri_jax.search.records import ArchitectureRecord, RecordError
from autoheri_jax.workdir_format import WorkdirFormatError, read_json_file

_DPI = 120


class ReportError(ValueError):
    """An input is missing or unreadable; the message names the file."""


# ---------------------------------------------------------------------------------------------
# Inputs


def _read_json(path: Path) -> Any:
    try:
        return read_json_file(path)
    except OSError as e:
        raise ReportError(f"{path} is not readable: {e}") from None
    except WorkdirFormatError as e:
        raise ReportError(str(e)) from None


def _architecture(obj: Any, path: Path) -> ArchitectureRecord:
    try:
        return ArchitectureRecord.from_json(obj, source=str(path))
    except RecordError as e:
        raise ReportError(str(e)) from None


def _read_architecture(path: Path) -> ArchitectureRecord:
    return _architecture(_read_json(path), path)


def _read_jsonl(path: Path) -> list[dict]:
    try:
        return artifacts.read_jsonl(path)
    except ValueError as e:
        raise ReportError(str(e)) from None


@dataclass
class Inputs:
    root: Path
    config: dict | None = None
    metrics: list[dict] | None = None
    history: list[dict] | None = None
    architecture: ArchitectureRecord | None = None  # architecture.json, else results.json's
    architecture_txt: str | None = None
    results: dict | None = None
    study: dict | None = None
    missing: dict[str, str] = field(default_factory=dict)  # file -> the step that writes it

    @property
    def task_names(self) -> list[str]:
        if self.architecture is not None and self.architecture.task_names:
            return list(self.architecture.task_names)
        if self.results:
            return list(self.results["data"]["train"]["stages"])
        return []

    def task_name(self, u: int) -> str:
        names = self.task_names
        return names[u] if u < len(names) else f"task{u}"

    @property
    def hidden(self) -> list[int]:
        cfg = self.config or (self.results or {}).get("config") or {}
        return list(cfg.get("model", {}).get("hidden", []))

    def model_color(self, model: str):
        """One colour per model, the same in every figure."""
        order = [r["model"] for r in self.metrics or []]
        order += list((self.results or {}).get("models", {}))
        for models in (self.study or {}).get("arms", {}).values():
            order += list(models)
        order = list(dict.fromkeys(order))
        return _colors(len(order))[order.index(model)] if model in order else "0.5"

    def edge_label(self, name: str) -> str:
        e = parse_edge(name)
        return (
            f"{self.task_name(e.src_task)}.l{e.src_layer} -> "
            f"{self.task_name(e.dst_task)}.l{e.dst_layer}"
        )


def normalize_study(raw: Any, path: Path) -> dict:
    """study.json -> {"arms": {arm: {model: {key: {"mean", "std"}}}}, "keys": [...], "paired":
    {arm: {model: {key: {"mean_diff", "ci_lo", "ci_hi", "mde", "n"}}}} (empty where the file has
    none), "compare_to": the paired block's reference model}.

    Reads the minimal shape of the module docstring, the same with each arm's models under a
    "models" key, and `autoheri study`'s {"modes": {mode: {"arms": {...}}}} (one panel per mode
    and arm).
    """

    def models_of(arm: Any) -> dict:
        models = arm.get("models", arm) if isinstance(arm, dict) else None
        if not isinstance(models, dict) or not all(
            isinstance(per_key, dict) and all(isinstance(v, dict) for v in per_key.values())
            for per_key in models.values()
        ):
            raise ReportError(
                f"{path}: each arm must map model -> metric key -> {{'mean': x, 'std': y}}"
            )
        return models

    def paired_of(arm: Any) -> dict:
        paired = arm.get("paired") if isinstance(arm, dict) else None
        return paired if isinstance(paired, dict) else {}

    arms: dict[str, dict] = {}
    paired: dict[str, dict] = {}  # arm -> model -> key -> paired difference from compare_to
    if isinstance(raw, dict) and isinstance(raw.get("arms"), dict):
        arms = {str(a): models_of(v) for a, v in raw["arms"].items()}
        paired = {str(a): paired_of(v) for a, v in raw["arms"].items()}
    elif isinstance(raw, dict) and isinstance(raw.get("modes"), dict):
        modes = raw["modes"]
        for mode, body in modes.items():
            if not isinstance(body, dict) or not isinstance(body.get("arms"), dict):
                raise ReportError(f"{path}: modes.{mode} has no 'arms' mapping")
            for a, v in body["arms"].items():
                name = str(a) if len(modes) == 1 else f"{a} ({mode} seeds)"
                arms[name], paired[name] = models_of(v), paired_of(v)
    else:
        raise ReportError(
            f"{path}: expected {{'arms': {{arm: {{model: {{key: {{'mean': x, 'std': y}}}}}}}}}}"
        )
    # AUC columns only ("cvr", "cvr.soft_auc", ...): a log-loss column has no place on an AUC axis
    keys = [k for k in raw.get("keys") or [] if "nll" not in k]
    return {"arms": arms, "keys": keys, "paired": paired, "compare_to": raw.get("compare_to")}


def load_inputs(root: str | Path) -> Inputs:
    root = Path(root).resolve()
    if not root.is_dir():
        raise ReportError(f"{root} is not a directory (expected an `autoheri run` workdir)")
    inp = Inputs(root)
    sources = [
        ("config.json", "search", "config", _read_json),
        ("metrics.jsonl", "search", "metrics", _read_jsonl),
        ("edge_history.jsonl", "search", "history", _read_jsonl),
        ("architecture.json", "search", "architecture", _read_architecture),
        ("results.json", "evaluate", "results", _read_json),
    ]
    for name, step, attr, read in sources:
        path = root / name
        if path.is_file():
            setattr(inp, attr, read(path))
        else:
            inp.missing[name] = step
    if (root / "architecture.txt").is_file():
        inp.architecture_txt = (root / "architecture.txt").read_text()
    if (root / "study.json").is_file():
        inp.study = normalize_study(_read_json(root / "study.json"), root / "study.json")
    if inp.architecture is None and (inp.results or {}).get("architecture") is not None:
        inp.architecture = _architecture(inp.results["architecture"], root / "results.json")
    if inp.config is None and inp.results is not None:
        inp.config = inp.results.get("config")
    if all(getattr(inp, a) is None for a in ("config", "metrics", "history", "results", "study")):
        raise ReportError(
            f"nothing to report in {root}: config.json is missing (and so are metrics.jsonl, "
            "results.json and study.json); run `autoheri run --config FILE --workdir "
            f"{root}` first"
        )
    return inp


# ---------------------------------------------------------------------------------------------
# Figures (matplotlib's object API on the Agg canvas: no pyplot, no global state)


def _colors(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(k % cmap.N) for k in range(n)]
