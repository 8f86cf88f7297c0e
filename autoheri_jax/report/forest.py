"""forest.png: a study's paired differences from its reference model, with 95% CIs and MDEs.

A study is about differences of 0.002-0.03 AUC between models scored on the same seeds; bars of
absolute AUC on a 0.5-1 axis hide them. Here every arm is a panel and every (model, metric key)
a row: the mean paired difference model - reference over the seeds (a dot), its 95% t-interval
(a line; filled dot where it excludes 0) and the smallest difference the seeds could detect (the
MDE, a grey band of +-MDE around 0), on an axis scaled to the differences themselves.
Input: `study.json`'s per-arm "paired" block (study.py), {model: {key: {mean_diff, ci_lo, ci_hi,
mde}}}, and its "compare_to".
"""

from __future__ import annotations

from pathlib import Path

from autoheri_jax.report.figures import _figure, _save
from autoheri_jax.report.inputs import Inputs
from autoheri_jax.report.tables import column_label


def _rows(paired: dict, keys: list[str]) -> list[tuple[str, str, dict]]:
    """(model, key, stats) in the order of the study's keys, models in file order."""
    return [
        (model, key, per_key[key])
        for key in keys
        for model, per_key in paired.items()
        if key in per_key and per_key[key].get("ci_lo") is not None
    ]


def plot_forest(inp: Inputs, path: Path) -> str | None:
    if inp.study is None:
        return "no `study.json` in the workdir (one run has no paired differences)"
    paired = inp.study.get("paired") or {}
    keys = list(inp.study.get("keys") or [])
    panels = [(arm, _rows(p, keys)) for arm, p in paired.items()]
    panels = [(arm, rows) for arm, rows in panels if rows]
    if not panels:
        return "study.json holds no paired differences (a study with one model per arm)"
    reference = inp.study.get("compare_to") or "the reference"
    height = 1.0 + sum(0.8 + 0.28 * len(rows) for _, rows in panels)
    fig = _figure(7.5, height)
    axes = fig.subplots(
        len(panels),
        1,
        squeeze=False,
        gridspec_kw={"height_ratios": [max(1, len(rows)) for _, rows in panels]},
    )[:, 0]
    for ax, (arm, rows) in zip(axes, panels, strict=True):
        for y, (model, _key, s) in enumerate(rows):
            color = inp.model_color(model)
            mde = s.get("mde")
            if mde:
                ax.fill_betweenx([y - 0.4, y + 0.4], -mde, mde, color="0.88", lw=0)
            significant = s["ci_lo"] > 0 or s["ci_hi"] < 0
            ax.hlines(y, s["ci_lo"], s["ci_hi"], color=color, lw=2)
            ax.plot(
                s["mean_diff"], y, "o", ms=6, color=color, mfc=color if significant else "white"
            )
        ax.axvline(0.0, color="0.3", lw=0.8)
        labels = [f"{model}  {column_label(key)}" for model, key, _ in rows]
        ax.set_yticks(range(len(rows)), labels, fontsize=8)
        ax.set_ylim(len(rows) - 0.5, -0.5)
        n = rows[0][2].get("n")
        ax.set_title(f"arm {arm}: model - {reference}, mean and 95% CI over {n} seeds", fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    axes[-1].set_xlabel("paired difference (filled: 95% CI excludes 0; grey band: +-MDE)")
    _save(fig, path)
    return None
