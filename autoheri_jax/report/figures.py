"""The PNG figures of `autoheri report` (matplotlib, Agg canvas; see report.py)."""

from __future__ import annotations

from pathlib import Path

from autoheri_jax.model.edges import parse_edge
from autoheri_jax.report.inputs import _DPI, Inputs, _colors
from autoheri_jax.report.tables import column_label
from autoheri_jax.search.records import ArchitectureRecord, CandidateEdge


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> None:
    fig.savefig(path, dpi=_DPI)


def _missing_note(inp: Inputs, name: str) -> str:
    if inp.study is not None and all(
        x is None for x in (inp.config, inp.metrics, inp.history, inp.results)
    ):  # a study's directory: the runs live below it
        runs = sorted(inp.root.glob("*/*/results.json"))
        example = f" (e.g. `{runs[0].parent}`)" if runs else ""
        return f"a study directory has no `{name}`: report one of its runs{example}"
    return f"`{name}` is missing: run `autoheri {inp.missing.get(name, 'run')}` first"


def plot_edge_probabilities(inp: Inputs, path: Path) -> str | None:
    """Returns None when drawn, else why the figure was skipped (as every plot_* does)."""
    if inp.history is None:
        if inp.architecture is not None and not inp.architecture.candidates:
            return "the searched model has no candidate edges (edge_mode none)"
        if inp.config is not None:
            return (
                "`edge_history.jsonl` is missing: the search has not logged a step yet, or "
                "its model has no searched edges"
            )
        return _missing_note(inp, "edge_history.jsonl")
    if not inp.history:
        return "`edge_history.jsonl` is empty: no model with searched edges logged yet"
    models = list(dict.fromkeys(r["model"] for r in inp.history))
    arch = inp.architecture
    threshold = 0.5 if arch is None or arch.threshold is None else arch.threshold
    panels = []  # (model, (u, d), records, edges of that task pair)
    for model in models:
        recs = sorted((r for r in inp.history if r["model"] == model), key=lambda r: r["step"])
        by_pair: dict[tuple[int, int], list[str]] = {}
        for edge in recs[-1]["probs"]:
            e = parse_edge(edge)
            by_pair.setdefault((e.src_task, e.dst_task), []).append(edge)
        panels += [(model, pair, recs, edges) for pair, edges in sorted(by_pair.items())]
    n_cols = min(3, len(panels))
    n_rows = -(-len(panels) // n_cols)
    longest = max(len(edges) for *_, edges in panels)
    fig = _figure(1.0 + 5.2 * n_cols, n_rows * (3.6 + 0.17 * longest))
    axes = fig.subplots(n_rows, n_cols, squeeze=False).ravel()
    for ax in axes[len(panels) :]:
        ax.set_axis_off()
    for ax, (model, (u, d), recs, edges) in zip(axes, panels, strict=False):
        # kept flags belong to the searched supernet's derived architecture
        shown = arch is not None and (model == "autoheri_search" or len(models) == 1)
        kept = set(arch.kept) if shown else ()
        steps = [r["step"] for r in recs]
        colors = _colors(len(edges))
        for k, edge in enumerate(edges):
            is_kept = edge in kept
            ax.plot(
                steps,
                [r["probs"].get(edge, float("nan")) for r in recs],
                color=colors[k],
                lw=2.2 if is_kept else 1.2,
                ls="-" if is_kept else "--",
                marker="o" if len(steps) <= 40 else None,
                ms=3,
                label=inp.edge_label(edge) + ("  (kept)" if is_kept else ""),
            )
        ax.axhline(threshold, color="0.4", lw=0.8, ls=":")
        ax.text(steps[0], threshold + 0.01, f" threshold {threshold}", fontsize=8, color="0.3")
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("search step")
        ax.set_ylabel("edge probability  sigmoid(logit)")
        title = f"{inp.task_name(u)} -> {inp.task_name(d)}"
        ax.set_title(title if len(models) == 1 else f"{model}: {title}", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(
            loc="upper center",
            bbox_to_anchor=(0.5, -0.16),
            fontsize=8,
            ncol=1 if len(edges) <= 4 else 2,
            frameon=False,
        )
    fig.suptitle(
        "edge probabilities during the search (solid = kept in the derived architecture)",
        fontsize=11,
    )
    _save(fig, path)
    return None


def _pairs(
    arch: ArchitectureRecord,
) -> dict[tuple[int, int], dict[tuple[int, int], CandidateEdge]]:
    by_pair: dict[tuple[int, int], dict[tuple[int, int], CandidateEdge]] = {}
    for c in arch.candidates:
        e = parse_edge(c.edge)
        by_pair.setdefault((e.src_task, e.dst_task), {})[(e.src_layer, e.dst_layer)] = c
    return dict(sorted(by_pair.items()))


def _num_layers(inp: Inputs) -> int:
    if inp.hidden:
        return len(inp.hidden)
    layers = [0]
    for c in inp.architecture.candidates if inp.architecture is not None else ():
        e = parse_edge(c.edge)
        layers += [e.src_layer, e.dst_layer]
    return max(layers) + 1


def plot_edge_heatmap(inp: Inputs, path: Path) -> str | None:
    import numpy as np
    from matplotlib.patches import Rectangle

    arch = inp.architecture
    if arch is None:
        return _missing_note(inp, "architecture.json")
    if not arch.candidates:
        return "the searched model has no candidate edges (edge_mode none): nothing to grid"
    pairs = _pairs(arch)
    n = _num_layers(inp)
    masked = arch.search_method == "masked"  # cells are z of the contrast, not gates
    value = (lambda c: c.evidence.z) if masked else (lambda c: c.prob)
    top = max([abs(value(c)) for c in arch.candidates] + [arch.threshold * 1.5])
    scale = {"vmin": -top, "vmax": top, "cmap": "RdBu"} if masked else {"vmin": 0.0, "vmax": 1.0}
    fig = _figure(max(5.5, 1.4 + (0.9 + 0.85 * n) * len(pairs)), 2.4 + 0.85 * n)
    axes = fig.subplots(1, len(pairs), squeeze=False)[0]
    image = None
    for ax, ((u, d), cells) in zip(axes, pairs.items(), strict=True):
        grid = np.full((n, n), np.nan)
        for (i, j), c in cells.items():
            grid[i, j] = value(c)
        image = ax.imshow(grid, aspect="equal", **({"cmap": "viridis"} | scale))
        for i in range(n):
            for j in range(n):
                c = cells.get((i, j))
                if c is None:
                    ax.text(j, i, "-", ha="center", va="center", color="0.5")
                    continue
                light = abs(value(c)) < 0.6 * top if masked else value(c) > 0.6
                label = f"z={value(c):+.1f}" if masked else f"{value(c):.3f}"
                ax.text(
                    j,
                    i,
                    label + ("\nkept" if c.kept else ""),
                    ha="center",
                    va="center",
                    fontsize=9,
                    fontweight="bold" if c.kept else "normal",
                    color="black" if light else "white",
                )
                if c.kept:
                    ax.add_patch(
                        Rectangle((j - 0.46, i - 0.46), 0.92, 0.92, fill=False, ec="red", lw=2.5)
                    )
        ax.set_xticks(range(n), [f"j={j}" for j in range(n)])
        ax.set_yticks(range(n), [f"i={i}" for i in range(n)])
        ax.set_xlabel(f"{inp.task_name(d)} layer j (downstream)")
        ax.set_ylabel(f"{inp.task_name(u)} layer i (upstream)")
        ax.set_title(f"{inp.task_name(u)} -> {inp.task_name(d)}", fontsize=10)
    label = "z of the on/off contrast (> 0: the edge helps)" if masked else "final probability"
    fig.colorbar(image, ax=list(axes), shrink=0.8, label=label)
    kept = len(arch.kept)
    rule = f"z > {arch.threshold:g}" if masked else f"probability > {arch.threshold}"
    fig.suptitle(
        f"{arch.search_mode} search: {kept} of {len(arch.candidates)} edges kept\n"
        f"({rule}, outlined red; - = not a candidate)",
        fontsize=10,
    )
    _save(fig, path)
    return None


def plot_edge_evidence(inp: Inputs, path: Path) -> str | None:
    """A masked search's evidence: each edge's mean on/off contrast with its 95% interval."""
    import numpy as np

    arch = inp.architecture
    if arch is None:
        return _missing_note(inp, "architecture.json")
    if arch.search_method != "masked":
        return "the search learned gates (edge_search.method=gradient): no contrast to draw"
    cands = arch.candidates
    ev = [c.evidence for c in cands]
    if any(e.mean is None for e in ev):
        return arch.evidence.note or "no edge could be judged"
    mean = np.array([e.mean for e in ev]) * 1e4
    err = np.array([[e.mean - e.ci_lo, e.ci_hi - e.mean] for e in ev]).T * 1e4
    fig = _figure(max(5.5, 0.7 * len(cands) + 2), 3.6)
    ax = fig.subplots()
    x = np.arange(len(cands))
    colors = ["#c0392b" if c.kept else "#1f618d" for c in cands]
    ax.bar(x, mean, color=colors, alpha=0.8)
    ax.errorbar(x, mean, yerr=err, fmt="none", ecolor="black", capsize=3)
    ax.axhline(0, color="0.4", lw=0.8)
    ax.set_xticks(
        x, [f"{c.edge}\nz={e.z:+.1f}" for c, e in zip(cands, ev, strict=True)], fontsize=8
    )
    ax.set_ylabel(f"{arch.evidence.criterion} off - on (nats x 1e4)")
    ax.set_title(
        f"edge evidence, mean [95% CI] over {arch.evidence.batches} validation batches; "
        f"red = kept (z > {arch.threshold:g})",
        fontsize=10,
    )
    _save(fig, path)
    return None


def plot_architecture(inp: Inputs, path: Path) -> str | None:
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    arch = inp.architecture
    if arch is None:
        return _missing_note(inp, "architecture.json")
    names = inp.task_names or [f"task{u}" for u in range(2)]
    n_layers = _num_layers(inp)
    hidden = inp.hidden or [None] * n_layers
    n_tasks = len(names)
    col_gap, box_w, box_h, row_gap = 3.2, 1.7, 0.62, 1.25
    x_of = lambda t: t * col_gap
    y_of = lambda level: level * row_gap  # level 0 input, 1..L hidden layers, L+1 head
    fig = _figure(2.2 + 2.9 * n_tasks, 1.6 + 1.05 * (n_layers + 2))
    ax = fig.subplots()
    ax.set_axis_off()
    ax.set_xlim(-box_w, x_of(n_tasks - 1) + box_w)
    ax.set_ylim(-0.9, y_of(n_layers + 1) + 0.8)

    def box(x: float, y: float, text: str, face: str) -> None:
        ax.add_patch(
            FancyBboxPatch(
                (x - box_w / 2, y - box_h / 2),
                box_w,
                box_h,
                boxstyle="round,pad=0.02,rounding_size=0.08",
                fc=face,
                ec="0.25",
                lw=1.2,
                zorder=2,
            )
        )
        ax.text(x, y, text, ha="center", va="center", fontsize=9, zorder=3)

    def arrow(a: tuple, b: tuple, **kw) -> FancyArrowPatch:
        patch = FancyArrowPatch(a, b, arrowstyle="-|>", mutation_scale=12, zorder=1, **kw)
        ax.add_patch(patch)
        return patch

    for t, name in enumerate(names):
        x = x_of(t)
        box(x, y_of(0), "input\n(shared embeddings)", "#e8e8e8")
        for layer in range(n_layers):
            width = "" if hidden[layer] is None else f"\n{hidden[layer]} units"
            box(x, y_of(layer + 1), f"{name} layer {layer}{width}", "#cfe2f3")
        box(x, y_of(n_layers + 1), f"{name} head\nlogit", "#fde9c8")
        for level in range(n_layers + 1):
            arrow((x, y_of(level) + box_h / 2), (x, y_of(level + 1) - box_h / 2), color="0.3")
        ax.text(x, y_of(n_layers + 1) + 0.62, name, ha="center", fontsize=11, fontweight="bold")

    # Labels stay in the gaps between towers, clear of each other; one colour per task pair.
    columns = [x_of(t) for t in range(n_tasks)]
    pair_color: dict[tuple[int, int], str] = {}
    placed: list[tuple[float, float]] = []
    label_w, label_h = 0.62, 0.2
    for c in arch.candidates:
        if not c.kept:
            continue
        e = parse_edge(c.edge)
        p0 = (x_of(e.src_task) + box_w / 2, y_of(e.src_layer + 1))
        p1 = (x_of(e.dst_task) - box_w / 2, y_of(e.dst_layer + 1))
        rad = -0.25 * (e.dst_task - e.src_task - 1)  # towers in between: bow around them
        pair = (e.src_task, e.dst_task)
        color = pair_color.setdefault(pair, _PAIR_COLORS[len(pair_color) % len(_PAIR_COLORS)])
        arrow(p0, p1, color=color, lw=2.0, connectionstyle=f"arc3,rad={rad}")
        # matplotlib's arc3 is the quadratic Bezier through this control point
        ctrl = (
            (p0[0] + p1[0]) / 2 + rad * (p1[1] - p0[1]),
            (p0[1] + p1[1]) / 2 - rad * (p1[0] - p0[0]),
        )
        best, best_score = None, -1.0
        for k in range(41):
            t = 0.1 + 0.8 * k / 40
            pt = tuple(
                (1 - t) ** 2 * a + 2 * t * (1 - t) * b + t**2 * z
                for a, b, z in zip(p0, ctrl, p1, strict=True)
            )
            if any(abs(pt[0] - cx) < (box_w + label_w) / 2 for cx in columns):
                continue
            clearance = min(
                (max(abs(pt[0] - qx) / label_w, abs(pt[1] - qy) / label_h) for qx, qy in placed),
                default=10.0,
            )
            score = min(clearance, 3.0) - 0.3 * abs(t - 0.5)  # clear of labels, then central
            if score > best_score:
                best, best_score = pt, score
        if best is None:
            best = ctrl
        placed.append(best)
        ax.text(
            *best,
            f"z={c.evidence.z:+.1f}" if c.evidence is not None else f"p={c.prob:.3f}",
            ha="center",
            va="center",
            fontsize=8.5,
            color=color,
            bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": color, "lw": 0.6},
            zorder=4,
        )
    if len(pair_color) > 1:
        from matplotlib.lines import Line2D

        handles = [
            Line2D([], [], color=col, lw=2, label=f"{names[u]} -> {names[d]}")
            for (u, d), col in pair_color.items()
        ]
        ax.legend(
            handles=handles,
            loc="lower center",
            ncol=len(handles),
            fontsize=8.5,
            frameon=False,
            bbox_to_anchor=(0.5, -0.02),
        )
    kept, total = len(arch.kept), len(arch.candidates)
    title = f"derived architecture: {kept} of {total} candidate edges kept"
    if total and not kept:
        title += " (none: independent towers, as ESMM)"
    ax.set_title(
        title + f"\n({arch.search_mode} search; arrow u.i -> d.j: layer i output "
        "feeds layer j input)",
        fontsize=10,
    )
    _save(fig, path)
    return None


_PAIR_COLORS = ("#c0392b", "#1f618d", "#7d3c98", "#b9770e", "#117a65", "#566573")


def _auc_panels(inp: Inputs) -> tuple[list[str], list[tuple[str, dict, dict, dict | None]]]:
    """metric keys, and per panel (title, {model: {key: mean}}, {model: {key: std}}, oracle)."""
    res_oracle = None
    if inp.results and inp.results.get("oracle"):
        res_oracle = {k: v["auc"] for k, v in inp.results["oracle"]["test"].items()}
    if inp.study is not None:
        panels = []
        keys = list(inp.study["keys"] or (inp.results or {}).get("metric_keys", []))
        for arm, models in inp.study["arms"].items():
            means, stds, oracle = {}, {}, None  # an arm's data may differ from results.json's
            for model, per_key in models.items():
                m = {k: v.get("mean") for k, v in per_key.items()}
                s = {k: v.get("std") for k, v in per_key.items()}
                keys += [k for k in per_key if k not in keys and not inp.study["keys"]]
                if model == "oracle":
                    oracle = m
                else:
                    means[model], stds[model] = m, s
            panels.append((f"arm {arm} (mean ± std over seeds)", means, stds, oracle))
        return keys, panels
    res = inp.results
    means = {name: {k: v["auc"] for k, v in m["test"].items()} for name, m in res["models"].items()}
    return list(res["metric_keys"]), [(f"{res.get('name', '')}: one run", means, {}, res_oracle)]


def plot_auc(inp: Inputs, path: Path) -> str | None:
    import numpy as np

    if inp.results is None and inp.study is None:
        return _missing_note(inp, "results.json")
    keys, panels = _auc_panels(inp)
    if not keys or not any(means for _, means, _, _ in panels):
        return "no test AUC to plot in results.json / study.json"
    all_models = list(dict.fromkeys(m for _, means, _, _ in panels for m in means))
    values = [
        v
        for _, means, stds, oracle in panels
        for src in (*means.values(), oracle or {})
        for v in src.values()
        if v is not None
    ]
    low = 0.5 if min(values) >= 0.5 else max(0.0, min(values) - 0.05)
    fig = _figure(1.8 + len(keys) * (0.9 + 0.32 * len(all_models)), 1.2 + 3.6 * len(panels))
    axes = fig.subplots(len(panels), 1, squeeze=False, sharey=True)[:, 0]
    width = 0.8 / max(1, len(all_models))
    for ax, (title, means, stds, oracle) in zip(axes, panels, strict=True):
        x = np.arange(len(keys))
        for k, model in enumerate(all_models):
            if model not in means:
                continue
            heights = [means[model].get(key) for key in keys]
            errs = [stds.get(model, {}).get(key) for key in keys]
            xs = x - 0.4 + width * (k + 0.5)
            ok = [h is not None for h in heights]
            hs = np.array([h if h is not None else np.nan for h in heights])
            bars = ax.bar(
                xs[ok],
                hs[ok] - low,
                width * 0.92,
                bottom=low,
                color=inp.model_color(model),
                label=model,
                yerr=[np.nan if e is None else e for e, o in zip(errs, ok, strict=True) if o]
                if stds
                else None,
                capsize=3 if stds else 0,
            )
            for rect, h in zip(bars, hs[ok], strict=True):
                ax.text(
                    rect.get_x() + rect.get_width() / 2,
                    low + 0.005,
                    f"{h:.3f}",
                    ha="center",
                    va="bottom",
                    rotation=90,
                    fontsize=7.5,
                    color="white" if h - low > 0.06 else "black",
                )
        if oracle:
            for i, key in enumerate(keys):
                if oracle.get(key) is None:
                    continue
                ax.hlines(
                    oracle[key],
                    i - 0.45,
                    i + 0.45,
                    colors="black",
                    linestyles="--",
                    lw=1.5,
                    label="oracle (true probabilities)" if i == 0 else None,
                )
                ax.text(i + 0.45, oracle[key], f" {oracle[key]:.3f}", va="center", fontsize=7.5)
        if low < 0.5:
            ax.axhline(0.5, color="0.4", lw=0.8, ls=":")
        ax.set_xticks(x, [column_label(k) for k in keys], fontsize=8)
        ax.set_ylabel("test AUC")
        ax.set_ylim(low, min(1.0, max(values) + 0.05))
        ax.set_xlim(-0.6, len(keys) - 0.4 + 0.25)
        ax.grid(axis="y", alpha=0.3)
        ax.set_title(title, fontsize=10)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    _save(fig, path)
    return None


_LINE_STYLES = ("-", "--", "-.", ":", (0, (5, 1, 1, 1)))  # identical curves stay visible


def smoothed(values, weight: float = 0.9):
    """Exponential moving average with the start-up bias removed (as Adam's moments): a
    single-batch loss is noise around the trend a reader wants to see."""
    out, avg = [], 0.0
    for k, v in enumerate(values, start=1):
        avg = weight * avg + (1 - weight) * v
        out.append(avg / (1 - weight**k))
    return out


def plot_loss(inp: Inputs, path: Path) -> str | None:
    if inp.metrics is None:
        return _missing_note(inp, "metrics.jsonl")
    if not inp.metrics:
        return "`metrics.jsonl` is empty: no log point yet"
    phases = list(dict.fromkeys(r["phase"] for r in inp.metrics))
    models = list(dict.fromkeys(r["model"] for r in inp.metrics))
    fig = _figure(6.0 * len(phases) + 1.0, 4.2)
    axes = fig.subplots(1, len(phases), squeeze=False)[0]
    for ax, phase in zip(axes, phases, strict=True):
        for k, model in enumerate(models):
            recs = sorted(
                (r for r in inp.metrics if r["phase"] == phase and r["model"] == model),
                key=lambda r: r["step"],
            )
            if not recs:
                continue
            steps, color = [r["step"] for r in recs], inp.model_color(model)
            style = _LINE_STYLES[k % len(_LINE_STYLES)]
            losses = [r["loss"] for r in recs]
            ax.plot(steps, losses, color=color, lw=0.6, alpha=0.3)
            ax.plot(steps, smoothed(losses), color=color, lw=1.8, ls=style, label=model)
            valid = [(r["step"], r["valid_nll"]) for r in recs if "valid_nll" in r]
            if valid:
                vs, vl = [v[0] for v in valid], [v[1] for v in valid]
                ax.plot(
                    vs,
                    vl,
                    color=color,
                    lw=1.2,
                    ls=style,
                    marker="s",
                    ms=3,
                    label=f"{model} (validation)",
                )
        ax.set_xlabel("step")
        ax.set_ylabel("task loss (nats): faint per batch, bold smoothed")
        ax.set_title(f"{phase} phase", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    _save(fig, path)
    return None
