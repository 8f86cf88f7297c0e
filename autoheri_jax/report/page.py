"""`autoheri report DIR`: figures and one markdown page from a workdir's files.

Writes into `DIR/report/`:

  edge_probabilities.png  edge probability over the search steps, one line per candidate edge
                          (edge_history.jsonl)
  edge_heatmap.png        per task pair, the final probability of every candidate edge: rows
                          upstream layer i, columns downstream layer j, kept edges outlined
                          (architecture.json)
  architecture.png        the derived architecture: one column of layer boxes per task tower,
                          input at the bottom, head at the top, an arrow per kept edge labelled
                          with its probability (architecture.json, config.json for widths)
  auc.png                 test AUC per metric key, one bar per model, the oracle as a reference
                          line (results.json); with `DIR/study.json`, bars are means over seeds
                          with one-std error bars, one panel per arm
  forest.png              with `DIR/study.json`: per arm, each model's paired difference from the
                          study's reference model per metric key, its 95% CI and the MDE band,
                          on an axis scaled to the differences (report/forest.py)
  loss.png                training loss per model over steps, one panel per phase (metrics.jsonl)
  reliability.png         per metric key, mean label rate against mean prediction in each
                          equal-mass bin, one line per model and the diagonal; log-log axes when
                          every value is below 0.2 (results.json "reliability")
  report.md               the page: every figure, the results and calibration tables, the derived
                          architecture

`study.json` (optional; written by a multi-seed study) is read in this minimal shape, other keys
ignored; a model named `oracle` in an arm, if present, is drawn as that arm's reference line:

  {"arms": {"<arm>": {"<model>": {"<metric key>": {"mean": 0.71, "std": 0.004}, ...}, ...}}}

A section whose input is missing (evaluation not run yet, a model without searched edges) is
skipped with a note in report.md; a workdir holding none of the inputs is refused naming the
file that is missing (`ReportError`, exit status 2 from the CLI).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from autoheri_jax.metrics import CALIBRATION_BINS
from autoheri_jax.report.calibration import calibration_tables, plot_reliability
from autoheri_jax.report.figures import (
    _missing_note,
    _num_layers,
    plot_architecture,
    plot_auc,
    plot_edge_evidence,
    plot_edge_heatmap,
    plot_edge_probabilities,
    plot_loss,
)
from autoheri_jax.report.forest import plot_forest
from autoheri_jax.report.inputs import Inputs, ReportError, load_inputs, normalize_study  # noqa: F401

_PLOTS = {
    "edge_probabilities": plot_edge_probabilities,
    "edge_heatmap": plot_edge_heatmap,
    "edge_evidence": plot_edge_evidence,
    "architecture": plot_architecture,
    "auc": plot_auc,
    "forest": plot_forest,
    "loss": plot_loss,
    "reliability": plot_reliability,
}
_CAPTIONS = {
    "edge_probabilities": "Edge probabilities during the search",
    "edge_heatmap": "Per task pair: final edge probabilities (gradient) or contrast z (masked)",
    "edge_evidence": "Each edge's on/off contrast with its 95% interval (masked search)",
    "architecture": "Derived architecture",
    "auc": "Test AUC",
    "forest": "Paired differences from the reference model (95% CI, MDE band)",
    "loss": "Training loss",
    "reliability": "Reliability (calibration)",
}


# ---------------------------------------------------------------------------------------------
# The markdown page


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4f}"


def results_table(results: dict) -> list[str]:
    """Markdown rows of results.json's test metrics (4 decimals, as `autoheri evaluate`)."""
    keys = results["metric_keys"]
    rows = [(name, m["test"]) for name, m in results["models"].items()]
    if results.get("oracle"):
        rows.append(("oracle (true probs)", results["oracle"]["test"]))
    header = ["model", *(f"{k} AUC" for k in keys), *(f"{k} NLL" for k in keys)]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for name, test in rows:
        cells = [name, *(_fmt(test[k]["auc"]) for k in keys), *(_fmt(test[k]["nll"]) for k in keys)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def study_table(study: dict, keys: Sequence[str]) -> list[str]:
    keys = list(keys)
    for models in study["arms"].values():
        for per_key in models.values():
            keys += [k for k in per_key if k not in keys]
    header = ["arm", "model", *(f"{k} AUC" for k in keys)]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for arm, models in study["arms"].items():
        for model, per_key in models.items():
            cells = []
            for k in keys:
                v = per_key.get(k) or {}
                mean, std = v.get("mean"), v.get("std")
                cells.append(_fmt(mean) + ("" if std is None else f" ± {std:.4f}"))
            lines.append("| " + " | ".join([arm, model, *cells]) + " |")
    return lines


def _architecture_text(inp: Inputs) -> str | None:
    if inp.architecture_txt is not None:
        return inp.architecture_txt
    if inp.architecture is not None:
        from autoheri_jax.search.architecture import render_architecture

        return render_architecture(inp.architecture, _num_layers(inp))
    return None


def write_markdown(inp: Inputs, out: Path, skipped: dict[str, str]) -> Path:
    name = (inp.results or {}).get("name") or (inp.config or {}).get("name") or inp.root.name
    lines = [f"# AutoHERI report: {name}", "", f"Workdir: `{inp.root}`", ""]

    def figure(key: str) -> None:
        if key in skipped:
            lines.extend([f"*{_CAPTIONS[key]}: skipped, {skipped[key]}.*", ""])
        else:
            lines.extend([f"![{_CAPTIONS[key]}]({key}.png)", ""])

    lines.extend(["## Test metrics", ""])
    if inp.results is not None:
        rows = inp.results["data"]["test"]["rows"]
        lines.append(
            f"Test split: {rows} impressions. AUC is exact (ties count half); NLL is the mean "
            "binary cross-entropy in nats; `cvr` is scored on clicked impressions only; the "
            "oracle scores the simulator's true probabilities."
        )
        lines.extend(["", *results_table(inp.results), ""])
    else:
        lines.extend([f"*Results: skipped, {_missing_note(inp, 'results.json')}.*", ""])
    if inp.study is not None:
        lines.extend(["### Study (mean ± std over seeds, from `study.json`)", ""])
        keys = inp.study["keys"] or (inp.results or {}).get("metric_keys", [])
        lines.extend([*study_table(inp.study, keys), ""])
        figure("forest")
    elif "auc" not in skipped:
        lines.extend(["*No `study.json` in the workdir: one run, so no error bars.*", ""])
    figure("auc")

    lines.extend(["## Calibration", ""])
    tables = calibration_tables(inp.results)
    if tables is not None:
        lines.append(
            f"ECE: the expected calibration error, sum over {CALIBRATION_BINS} equal-mass bins "
            "of the scored rows of (bin share) x |mean prediction - label rate|, in probability "
            "units; label noise alone gives a calibrated model a small ECE, the oracle's row "
            'shows how much. "vs truth": the same against the simulator\'s true probabilities '
            "(ECE) or per row over every impression (MAE). Selection gap: the mean predicted "
            "conditional rate where the previous stage was reached (scored, e.g. clicked) and "
            "on every impression; bias (all) = mean prediction - mean true rate on every "
            "impression."
        )
        lines.extend(["", *tables, ""])
    figure("reliability")

    lines.extend(["## Derived architecture", ""])
    text = _architecture_text(inp)
    if text is not None:
        lines.extend(["```", text.rstrip("\n"), "```", ""])
    figure("architecture")
    figure("edge_heatmap")
    if inp.architecture is not None and inp.architecture.search_method == "masked":
        figure("edge_evidence")

    lines.extend(["## Search", ""])
    figure("edge_probabilities")

    lines.extend(["## Training", ""])
    figure("loss")
    path = out / "report.md"
    path.write_text("\n".join(lines).rstrip("\n") + "\n")
    return path


def render(workdir: str | Path) -> tuple[Path, dict[str, str]]:
    """Writes `workdir/report/`; returns report.md's path and {figure: why it was skipped}."""
    inp = load_inputs(workdir)
    out = inp.root / "report"
    out.mkdir(exist_ok=True)
    skipped: dict[str, str] = {}
    for key, plot in _PLOTS.items():
        target = out / f"{key}.png"
        why = plot(inp, target)
        if why is not None:
            skipped[key] = why
            target.unlink(missing_ok=True)  # no stale figure from an earlier report
    return write_markdown(inp, out, skipped), skipped
