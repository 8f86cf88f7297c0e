"""The test-metrics tables `autoheri run` and `autoheri evaluate` print from results.json:
AUC and NLL per key, the scores against the true probabilities, and calibration."""

from __future__ import annotations

from autoheri_jax.metrics import CALIBRATION_BINS


def format_table(results: dict) -> str:
    keys = results["metric_keys"]
    rows = [(name, m["test"]) for name, m in results["models"].items()]
    if results["oracle"] is not None:
        rows.append(("oracle (true probs)", results["oracle"]["test"]))
    fmt = lambda v: f"{'n/a':>11}" if v is None else f"{v:>11.4f}"
    columns = [(k, "auc", f"{k} AUC") for k in keys] + [(k, "nll", f"{k} NLL") for k in keys]
    lines = [f"test metrics ({results['data']['test']['rows']} impressions)"]
    lines += _table(rows, columns, fmt)
    if results["oracle"] is not None:  # the simulator's truth: the low-noise instrument
        everywhere = [k for k in keys if any("soft_auc_all" in test[k] for _, test in rows)]
        soft = [(k, "soft_auc", f"{k} sAUC") for k in keys]
        soft += [(k, "soft_auc_all", f"{k}* sAUC") for k in everywhere]
        soft += [(k, "excess_nll_all", f"{k}* xNLL") for k in everywhere]
        lines += [
            "",
            "against the true probabilities (sAUC: soft-label AUC; *: post-click "
            "rate over every impression; xNLL: log-loss above the oracle's)",
        ]
        lines += _table(rows, soft, fmt)
    if any("ece" in test[k] for _, test in rows for k in keys):  # results.json from before: none
        later = [k for k in keys if any("selection_gap" in test[k] for _, test in rows)]
        truth = results["oracle"] is not None
        flat = [  # selection_gap's means beside the key's other fields, for _table
            (name, {k: {**test[k], **(test[k].get("selection_gap") or {})} for k in keys})
            for name, test in rows
        ]
        calib = [(k, "ece", f"{k} ECE") for k in keys]
        calib += [(k, "pred_scored", f"{k} scored") for k in later]
        calib += [(k, "pred_all", f"{k} all") for k in later]
        calib += [(k, "mae_true_all", f"{k}* MAE") for k in later if truth]
        lines += [
            "",
            f"calibration (ECE: |mean pred - label rate| over {CALIBRATION_BINS} equal-mass bins; "
            "scored / all: mean predicted rate",
            " where the previous stage was reached / on every impression"
            + ("; *: MAE vs the true rate on every impression)" if truth else ")"),
        ]
        lines += _table(flat, calib, fmt)
    return "\n".join(lines)


def _table(rows, columns, fmt) -> list[str]:
    header = f"{'model':<22}" + "".join(f"{title:>11}" for _, _, title in columns)
    return [header] + [
        f"{name:<22}" + "".join(fmt(test[k].get(field)) for k, field, _ in columns)
        for name, test in rows
    ]


def column_label(column: str) -> str:
    """Table heading of a column: "cvr" -> "cvr AUC", "cvr.soft_auc_all" -> "cvr soft AUC
    (all)"."""
    key, _, field = column.partition(".")
    return f"{key} {_FIELD_LABELS.get(field, field)}"


_FIELD_LABELS = {
    "": "AUC",
    "soft_auc": "soft AUC",
    "soft_auc_all": "soft AUC (all)",
    "excess_nll": "excess NLL",
    "excess_nll_all": "excess NLL (all)",
    "nll": "NLL",
}
