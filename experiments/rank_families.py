"""Rank every model of a study's runs, per arm, with paired 95% CIs: the comparators table.

Command:
  python experiments/rank_families.py runs/studies/comparators \
      [--columns cvr.soft_auc_all,cvr.mae_true_all] [--mode data]

Reads <workdir>/<arm>/<mode><seed>/results.json (the runs of `autoheri study`). For each arm and
column: every model's mean and std over seeds, its mean rank (1 = best; per seed, ties share
the mean rank), the paired difference from the study's reference model (ESMM) and from the
column's best model by mean, each with its 95% t interval and the minimum detectable effect
(MDE: the true difference detected at 5% with 80% power by pairs this noisy). "supported" says
what the CI against the reference does: "above" / "below" when it excludes 0 (in the column's
better / worse direction), "n.s." otherwise. Lower is better for error columns (ece*, mae*,
rmse*, excess_nll*, nll), higher for AUCs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from autoheri_jax.study import SEED_MODES, collect_run, paired_test
from autoheri_jax.workdir_format import read_json_file

LOWER_IS_BETTER = ("ece", "mae", "rmse", "excess_nll", "nll")
DEFAULT_COLUMNS = ("cvr.soft_auc_all", "cvr.mae_true_all", "cvr.ece")


def lower_is_better(column: str) -> bool:
    field = column.partition(".")[2]
    return any(field.startswith(p) for p in LOWER_IS_BETTER)


def seed_runs(arm_dir: Path, mode: str) -> list[dict]:
    """collect_run of every finished seed of one arm, in seed order."""
    prefix = SEED_MODES[mode]
    dirs = sorted(arm_dir.glob(f"{prefix}*"), key=lambda p: int(p.name[len(prefix) :]))
    return [r for r in (collect_run(d) for d in dirs) if r is not None]


def mean_ranks(values: dict[str, list[float]], lower: bool) -> dict[str, float]:
    """Mean over seeds of each model's rank among the models (1 = best, ties averaged)."""
    models = list(values)
    table = np.array([values[m] for m in models], np.float64)  # models x seeds
    if not lower:
        table = -table
    ranks = np.zeros_like(table)
    for s in range(table.shape[1]):
        col = table[:, s]
        for i, v in enumerate(col):
            ranks[i, s] = np.sum(col < v) + (np.sum(col == v) + 1) / 2
    return {m: float(ranks[i].mean()) for i, m in enumerate(models)}


def _ci(t: dict) -> str:
    if t["ci_lo"] is None:
        return "n/a"
    return f"{t['mean_diff']:+.4f} [{t['ci_lo']:+.4f}, {t['ci_hi']:+.4f}]"


def _verdict(t: dict, lower: bool) -> str:
    if t["ci_lo"] is None or t["ci_lo"] <= 0 <= t["ci_hi"]:
        return "n.s."
    better = (t["ci_hi"] < 0) if lower else (t["ci_lo"] > 0)
    return "above" if better else "below"


def rank_table(runs: list[dict], column: str, reference: str) -> list[str]:
    models = [m for m in runs[0]["auc"] if m != "oracle"]
    models = [m for m in models if all(m in r["auc"] for r in runs)]
    values = {m: [r["auc"][m].get(column) for r in runs] for m in models}
    values = {m: v for m, v in values.items() if all(x is not None for x in v)}
    if not values or reference not in values:
        return [f"(no {column} for {reference})"]
    lower = lower_is_better(column)
    ranks = mean_ranks(values, lower)
    means = {m: float(np.mean(v)) for m, v in values.items()}
    best = (min if lower else max)(means, key=means.get)
    order = sorted(values, key=lambda m: (ranks[m], means[m] if lower else -means[m]))
    direction = "lower is better" if lower else "higher is better"
    lines = [
        f"**{column}** ({direction}; n = {len(runs)} seeds; best by mean: {best})",
        "",
        f"| model | mean ± sd | mean rank | − {reference} [95% CI] | vs {reference} | MDE "
        f"| − {best} [95% CI] |",
        "|---|---|---|---|---|---|---|",
    ]
    for m in order:
        v = values[m]
        sd = float(np.std(v, ddof=1)) if len(v) > 1 else float("nan")
        ref = paired_test(v, values[reference])
        top = paired_test(v, values[best])
        ref_cells = (
            ("—", "—", "—")
            if m == reference
            else (
                _ci(ref),
                _verdict(ref, lower),
                "n/a" if ref["mde"] is None else f"{ref['mde']:.4f}",
            )
        )
        lines.append(
            f"| {m} | {means[m]:.4f} ± {sd:.4f} | {ranks[m]:.1f} | {ref_cells[0]} | "
            f"{ref_cells[1]} | {ref_cells[2]} | {'—' if m == best else _ci(top)} |"
        )
    return lines


def gap_table(arm_dir: Path, mode: str, key: str = "cvr") -> list[str]:
    """Mean over seeds of each model's selection gap on `key` (results.json "selection_gap"):
    the mean predicted rate over reached rows (clicked) and over every impression, and the
    same two means of the truth."""
    prefix = SEED_MODES[mode]
    runs = [read_json_file(p) for p in sorted(arm_dir.glob(f"{prefix}*/results.json"))]
    if not runs:
        return []
    tests = [{**r["models"], **({"oracle": r["oracle"]} if r.get("oracle") else {})} for r in runs]
    lines = [
        f"**{key} selection gap** (means over {len(runs)} seeds; scored = clicked rows)",
        "",
        "| model | pred scored | pred all | gap (all − scored) | true all | bias all |",
        "|---|---|---|---|---|---|",
    ]
    for m in tests[0]:
        gaps = [t[m]["test"][key].get("selection_gap") for t in tests if m in t]
        if not gaps or any(g is None for g in gaps):
            continue
        mean = {
            f: float(np.mean([g[f] for g in gaps]))
            if all(g.get(f) is not None for g in gaps)
            else None
            for f in gaps[0]
        }
        cells = [mean.get(f) for f in ("pred_scored", "pred_all", "gap", "true_all", "bias_all")]
        lines.append(
            f"| {m} | " + " | ".join("n/a" if c is None else f"{c:.4f}" for c in cells) + " |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("workdir", help="a study workdir (holds study.json and <arm>/ runs)")
    ap.add_argument("--columns", default=",".join(DEFAULT_COLUMNS))
    ap.add_argument("--mode", default="data", choices=sorted(SEED_MODES))
    ap.add_argument("--reference", default="esmm")
    ap.add_argument("--gaps", action="store_true", help="also the cvr selection-gap table")
    args = ap.parse_args(argv)
    root = Path(args.workdir)
    summary = root / "study.json"
    arms = (  # the study's arm order once it has a summary; else the arm directories
        list(read_json_file(summary)["modes"][args.mode]["arms"])
        if summary.exists()
        else sorted(p.name for p in root.iterdir() if p.is_dir())
    )
    for arm in arms:
        runs = seed_runs(root / arm, args.mode)
        if not runs:
            continue
        print(f"### {arm}\n")
        for column in args.columns.split(","):
            print("\n".join(rank_table(runs, column, args.reference)) + "\n")
        if args.gaps:
            print("\n".join(gap_table(root / arm, args.mode)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
