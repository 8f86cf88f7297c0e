"""Which source depths a search kept, run by run: the read-out of a world whose ground truth
planted a source depth rather than one edge (experiments/README.md, "The instrument check at
4M rows": every edge from click layer 1 or deeper beats every edge from layer 0).

Command (after `autoheri study --config experiments/studies/depth_eval.py --workdir W`):
  python experiments/kept_depth.py W [--min-source-layer 1]

For each arm and seed it prints the kept edges, and per arm: how many runs kept the right
depth (at least one edge, none from a source layer below --min-source-layer) with its exact
(Clopper-Pearson) 95% interval, how many kept any edge, and each edge's keep frequency; for a
gated search (paper, gradient), the first logged step from which every gate stays on the side
of 0.5 it ends on (from edge_history.jsonl): when the decision was made; for the masked
search, the same count for the edges its per-edge evidence kept before the selection; for the
ablation search, each seed's validation comparisons (difference, se, p, the margin). It
reads each run's results.json ("architecture" -> "kept") and architecture.json as plain JSON,
so it also reads studies run before workdir files carried a format version (the study of
depth_eval.py ran on such code); it reads nothing else from them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from scipy import stats

from autoheri_jax.model.edges import parse_edge
from autoheri_jax.study import paired_test


def right_depth(kept: list[str], min_source_layer: int) -> bool:
    """At least one edge kept, and every kept edge's source layer >= min_source_layer."""
    return bool(kept) and all(parse_edge(e).src_layer >= min_source_layer for e in kept)


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Exact two-sided interval of a binomial proportion k / n (n >= 1)."""
    a = (1 - level) / 2
    lo = 0.0 if k == 0 else float(stats.beta.ppf(a, k, n - k + 1))
    hi = 1.0 if k == n else float(stats.beta.ppf(1 - a, k + 1, n - k))
    return lo, hi


def mean_ci(values: list[float]) -> tuple[float, float, float]:
    """Mean and 95% t-interval of values (the study's paired test against 0); the interval is
    the mean itself for fewer than two values."""
    if len(values) < 2:
        m = sum(values) / len(values)
        return m, m, m
    t = paired_test(values, [0.0] * len(values))
    return t["mean_diff"], t["ci_lo"], t["ci_hi"]


def _seed_of(run_dir: Path) -> int:
    """The seed of a study run directory (`seed<k>` or `dseed<k>`)."""
    return int(run_dir.name.split("seed")[-1])


def kept_by_seed(arm_dir: Path) -> dict[int, list[str]]:
    """{seed: kept edge names} of every finished run (a results.json) under an arm's directory."""
    out = {}
    for res in sorted(arm_dir.glob("*seed*/results.json")):
        out[_seed_of(res.parent)] = list(json.loads(res.read_text())["architecture"]["kept"])
    return out


def evidence_by_seed(arm_dir: Path) -> dict[int, list[str]]:
    """{seed: the edges the masked search's per-edge evidence kept, before its selection} of
    every run under an arm's directory whose architecture.json records evidence."""
    out = {}
    for path in sorted(arm_dir.glob("*seed*/architecture.json")):
        record = json.loads(path.read_text())
        if "evidence" not in record:
            continue
        out[_seed_of(path.parent)] = [
            c["edge"]
            for c in record["candidates"]
            if (c.get("evidence") or {}).get("decision") == "kept"
        ]
    return out


def comparisons_by_seed(arm_dir: Path) -> dict[int, list[dict]]:
    """{seed: the ablation search's validation comparisons} of every run under an arm's
    directory whose architecture.json records an ablation batch (each comparison: candidate,
    against, diff, se, p, level, wins)."""
    out = {}
    for path in sorted(arm_dir.glob("*seed*/architecture.json")):
        record = json.loads(path.read_text())
        if record.get("ablation"):
            out[_seed_of(path.parent)] = list(record["ablation"]["comparisons"])
    return out


def comparison_line(c: dict) -> str:
    verdict = "wins" if c["wins"] else "refused"
    return (
        f"{c['candidate']} - {c['against']} {c['diff']:+.4f} (se {c['se']:.4f}, p {c['p']:.2g} "
        f"against {c['level']:.3g}: {verdict})"
    )


def settled_step(history: list[dict]) -> int | None:
    """The first logged step from which every edge's probability stays strictly on the side of
    0.5 it ends on (edge_history.jsonl records of a gated search): a gate held at exactly 0.5
    (an arch warm-up) has decided nothing yet. None without records, or when a gate ends at
    exactly 0.5."""
    if not history or any(p == 0.5 for p in history[-1]["probs"].values()):
        return None
    final = {e: p > 0.5 for e, p in history[-1]["probs"].items()}
    settled = history[-1]["step"]
    for rec in reversed(history):
        if any(p == 0.5 or (p > 0.5) != final[e] for e, p in rec["probs"].items()):
            break
        settled = rec["step"]
    return settled


def settled_by_seed(arm_dir: Path) -> dict[int, int]:
    """{seed: settled_step} of every run under an arm's directory that logged edge gates."""
    out = {}
    for path in sorted(arm_dir.glob("*seed*/edge_history.jsonl")):
        history = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        step = settled_step(history)
        if step is not None:
            out[_seed_of(path.parent)] = step
    return out


def summarize(kept: dict[int, list[str]], min_source_layer: int) -> dict:
    n = len(kept)
    right = sum(right_depth(k, min_source_layer) for k in kept.values())
    freq: dict[str, int] = {}
    for edges in kept.values():
        for e in edges:
            freq[e] = freq.get(e, 0) + 1
    return {
        "runs": n,
        "right": right,
        "right_ci": clopper_pearson(right, n) if n else None,
        "any_kept": sum(bool(k) for k in kept.values()),
        "kept_counts": [len(kept[s]) for s in sorted(kept)],
        "kept_mean_ci": mean_ci([len(kept[s]) for s in sorted(kept)]),
        "frequency": {e: c / n for e, c in sorted(freq.items())},
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("workdir", type=Path, help="an `autoheri study` workdir")
    p.add_argument("--min-source-layer", type=int, default=1)
    args = p.parse_args(argv)
    arms = sorted(d for d in args.workdir.iterdir() if d.is_dir())
    if not arms:
        raise SystemExit(f"{args.workdir} holds no arm directories")
    for arm in arms:
        kept = kept_by_seed(arm)
        if not kept:
            continue
        print(f"## {arm.name}")
        for seed, edges in sorted(kept.items()):
            mark = "right" if right_depth(edges, args.min_source_layer) else "-"
            print(f"  seed {seed}: {len(edges)} kept {edges} [{mark}]")
        s = summarize(kept, args.min_source_layer)
        lo, hi = s["right_ci"]
        print(
            f"  right depth (>= 1 edge, sources >= layer {args.min_source_layer}): "
            f"{s['right']}/{s['runs']} [{lo:.2f}, {hi:.2f}]; any edge kept: "
            f"{s['any_kept']}/{s['runs']}; kept per seed {s['kept_counts']}, mean "
            "{:.1f} [{:.1f}, {:.1f}]".format(*s["kept_mean_ci"])
        )
        freq = ", ".join(f"{e} {v:.1f}" for e, v in s["frequency"].items()) or "none kept"
        print(f"  keep frequency: {freq}")
        evidence = evidence_by_seed(arm)
        if evidence:  # the masked search: what its evidence alone would have kept
            e = summarize(evidence, args.min_source_layer)
            lo, hi = e["right_ci"]
            print(
                f"  evidence alone: right depth {e['right']}/{e['runs']} [{lo:.2f}, {hi:.2f}]; "
                f"kept per seed {e['kept_counts']}"
            )
        for seed, made in sorted(comparisons_by_seed(arm).items()):  # the ablation search
            print(f"  seed {seed} on validation: " + "; ".join(map(comparison_line, made)))
        settled = settled_by_seed(arm)
        if settled:  # a gated search: when its decision was made
            steps = [settled[k] for k in sorted(settled)]
            print(f"  every gate on its final side from logged step (per seed): {steps}")


if __name__ == "__main__":
    main()
