"""`autoheri report`'s calibration part: the reliability figure and the calibration tables.

Both read results.json's calibration fields (metrics.py: "ece", "reliability", "ece_true",
"mae_true_all", "selection_gap"); a results.json written before them gets a note instead.
"""

from __future__ import annotations

from pathlib import Path

from autoheri_jax.report.figures import _figure, _missing_note, _save
from autoheri_jax.report.inputs import Inputs

ORACLE = "oracle (true probs)"
_LOG_BELOW = 0.2  # a panel whose largest value is below this gets log axes: 3% stays readable


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4f}"


def _tests(results: dict) -> list[tuple[str, dict]]:
    """(model, its "test" block) per model, the oracle last."""
    rows = [(name, m["test"]) for name, m in results["models"].items()]
    if results.get("oracle"):
        rows.append((ORACLE, results["oracle"]["test"]))
    return rows


def has_calibration(results: dict | None) -> bool:
    return results is not None and any(
        test.get(k, {}).get("reliability") for _, test in _tests(results) for k in test
    )


_OLD = (
    "results.json has no calibration fields (it was written before they existed): rerun "
    "`autoheri evaluate`"
)


# ---------------------------------------------------------------------------------- figure


def axis_range(values) -> tuple[bool, float, float]:
    """(log axes?, lower, upper limit) of a reliability panel holding `values` (every bin's
    mean prediction and observed rate): log-log when all lie below 0.2, so a 3% rate is not
    squeezed into the corner of a 0-1 square; at most 4 decades, a value below them is drawn on
    the bottom / left edge. Linear axes start at 0."""
    import numpy as np

    values = np.asarray(values, np.float64)
    log = bool(values.max() < _LOG_BELOW and (values > 0).any())
    if not log:
        return False, 0.0, float(min(1.0, values.max() * 1.05 + 0.01))
    top = float(values.max() * 1.4)
    return True, float(max(values[values > 0].min() / 1.6, top * 1e-4)), top


def plot_reliability(inp: Inputs, path: Path) -> str | None:
    """One panel per metric key: mean label rate (y) against mean prediction (x) per
    equal-mass bin, one line per model, the oracle dashed, the diagonal dotted. A panel whose
    values all lie below 0.2 gets log-log axes (a bin with no positive is drawn on the bottom
    edge as a down-pointing triangle); otherwise linear axes from 0. Returns None when drawn,
    else why it was skipped (as every plot_* does)."""
    import numpy as np
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    if inp.results is None:
        return _missing_note(inp, "results.json")
    if not has_calibration(inp.results):
        return _OLD
    keys = [
        k
        for k in inp.results["metric_keys"]
        if any(test.get(k, {}).get("reliability") for _, test in _tests(inp.results))
    ]
    n_cols = min(3, len(keys))
    n_rows = -(-len(keys) // n_cols)
    fig = _figure(1.0 + 4.6 * n_cols, 0.6 + 5.4 * n_rows)
    axes = fig.subplots(n_rows, n_cols, squeeze=False).ravel()
    for ax in axes[len(keys) :]:
        ax.set_axis_off()
    label = lambda v, _: f"{v:g}"
    for ax, key in zip(axes, keys, strict=False):
        lines = [(m, t[key]) for m, t in _tests(inp.results) if t.get(key, {}).get("reliability")]
        values = np.array(
            [v for _, f in lines for s in ("pred", "obs") for v in f["reliability"][s]]
        )
        log, floor, top = axis_range(values)
        ax.plot([floor or 1e-9, top], [floor or 1e-9, top], color="0.55", ls=":", lw=1.2)
        zeros = False
        for model, f in lines:
            rel = f["reliability"]
            pred, obs = np.array(rel["pred"]), np.array(rel["obs"])
            empty = log & (obs <= 0)  # no positive in the bin: no place on a log axis
            zeros |= bool(empty.any())
            pred, obs = np.maximum(pred, floor), np.maximum(obs, floor)
            oracle = model == ORACLE
            color = "black" if oracle else inp.model_color(model)
            ece = "" if f.get("ece") is None else f"  ECE {f['ece']:.4f}"
            ax.plot(
                pred,
                obs,
                color=color,
                lw=1.0 if oracle else 1.6,
                ls="--" if oracle else "-",
                marker="o",
                ms=3.5,
                label=model + ece,
            )
            ax.plot(pred[empty], obs[empty], "v", color=color, ms=7, ls="none")
        if log:
            ax.set_xscale("log")
            ax.set_yscale("log")
            decades = np.log10(top / floor)
            subs = (1.0, 2.0, 5.0) if decades <= 2.2 else (1.0, 3.0) if decades <= 3.2 else (1.0,)
            for axis in (ax.xaxis, ax.yaxis):
                axis.set_major_locator(LogLocator(base=10, subs=subs))
                axis.set_major_formatter(FuncFormatter(label))
                axis.set_minor_formatter(NullFormatter())
        ax.set_xlim(floor or 0.0, top)
        ax.set_ylim(floor or 0.0, top)
        ax.set_xlabel(f"mean predicted {key} (per bin)")
        ax.set_ylabel(f"observed {key} rate (per bin)")
        rows = sum(lines[0][1]["reliability"]["rows"])
        bins = len(lines[0][1]["reliability"]["rows"])
        scale = "log-log" if log else "linear"
        ax.set_title(f"{key}: {bins} equal-mass bins of {rows} rows ({scale})", fontsize=10)
        ax.grid(alpha=0.3, which="major")
        handles = ax.get_legend_handles_labels()[0]
        handles.append(Line2D([], [], color="0.55", ls=":", label="calibrated (y = x)"))
        if zeros:
            handles.append(Line2D([], [], color="0.3", marker="v", ls="none", label="no positive"))
        ax.legend(
            handles=handles,
            fontsize=7.5,
            loc="upper center",
            bbox_to_anchor=(0.5, -0.16),
            frameon=False,
            ncol=2,
        )
    fig.suptitle(
        "reliability: observed rate against prediction, per equal-mass bin of the "
        "scored rows (a conditional key: those that reached the previous stage)",
        fontsize=10,
    )
    _save(fig, path)
    return None


# ---------------------------------------------------------------------------------- tables


def calibration_tables(results: dict | None) -> list[str] | None:
    """Markdown: ECE per model and key (and, with the truth, ECE and MAE against it), then the
    selection gap of every later conditional key; None when results.json has no calibration
    fields."""
    if not has_calibration(results):
        return None
    keys = results["metric_keys"]
    rows = _tests(results)
    truth = any("ece_true" in test.get(k, {}) for _, test in rows for k in keys)
    later = [k for k in keys if any("selection_gap" in test.get(k, {}) for _, test in rows)]
    table = lambda header, body: [
        "| " + " | ".join(header) + " |",
        "|" + " --- |" * len(header),
        *("| " + " | ".join(cells) + " |" for cells in body),
    ]
    cols = [(k, "ece", f"{k} ECE") for k in keys]
    if truth:
        cols += [(k, "ece_true", f"{k} ECE vs truth") for k in keys]
        cols += [(k, "mae_true_all", f"{k} MAE vs truth (all)") for k in later]
    out = table(
        ["model", *(title for *_, title in cols)],
        [[name, *(_fmt(test.get(k, {}).get(f)) for k, f, _ in cols)] for name, test in rows],
    )
    if later:
        gap = [
            ("pred_scored", "mean pred (scored)"),
            ("pred_all", "mean pred (all)"),
            ("gap", "gap (all − scored)"),
        ]
        if truth:
            gap += [
                ("true_scored", "true mean (scored)"),
                ("true_all", "true mean (all)"),
                ("bias_all", "bias (all)"),
            ]
        body = []
        for k in later:
            for name, test in rows:
                sg = test.get(k, {}).get("selection_gap") or {}
                body.append([name, k, *(_fmt(sg.get(f)) for f, _ in gap)])
        out += ["", *table(["model", "key", *(title for _, title in gap)], body)]
    return out
