"""The ground truth a search is judged against: 20 fixed architectures per world, retrained.

Command (the tables in experiments/README.md, "The ground truth"):
  python experiments/ground_truth.py --study experiments/studies/search_decides.py \
      --workdir runs/ground_truth/search_decides --seeds 10 \
      --search-workdir runs/studies/search_decides

For every arm (world) of the study and seed k it builds exactly the config the study's run
<arm>/dseed<k> uses (study.arm_config, seed mode "data": the world, its data and the retrain
seed all k), and retrains in one vmapped step (autoheri_jax/train/arch_batch.py) no edge
(= ESMM), every edge (= all-on), each edge alone and every edge but each one, from the same
fresh weights with the retrain budget. It scores each on the 1M-row test draw against the true
probabilities (cvr* sAUC: post-click CVR over every impression) and on validation by every
observable criterion. Then per world:

  add-one   sAUC(only k) - sAUC(none): what edge k adds to ESMM alone
  drop-one  sAUC(all) - sAUC(all but k): what the other edges cannot replace of edge k
            (add-one > 0 with drop-one ~ 0 means the edges are interchangeable)
  criteria  Kendall's tau over the 20 architectures between each validation criterion and
            test cvr* sAUC, per seed: which observable orders architectures as the truth does
  best      per seed, the architecture a criterion picks on validation, its test sAUC
  regret    (with --search-workdir) best (picked on validation by --pick) minus the
            study's derived AutoHERI model of the same world and seed
Writes <workdir>/<arm>/seed<k>.json (a finished world-seed is not run again; one stopped
midway resumes from <arm>/seed<k>.ckpt, its checkpoints, which go once the record is written),
ground_truth.json, ground_truth.md and ground_truth.png. About 80 s per world-seed on 2 CPU
cores for study_base.

A world with a planted answer (data/worlds.py) is an instrument: before it judges a search, its
ground truth must show that it works, by this criterion (fixed before any run of it):
  expected set G  shallow: every edge from click layer 0 or 1; deep: every edge from the last
                  click layer; bypass: every edge from the click tower into the conversion
                  (last) tower (added with the world, before its first run); planted i*->j*:
                  the edges (i, j) with i <= i* and j <= j* - (i* - i) (they carry teacher
                  layer i*, or what computes it, with the depth its read-out needs); null:
                  none.
  works (G set)   g = the edge of G with the highest mean add-one: its add-one has a 95% CI
                  above 0, and add-one(g) - add-one(r) has a paired 95% CI above 0 for every
                  edge r outside G.
  works (null)    no edge's add-one, and not all - none, has a 95% CI above 0.
A world that fails is reported as failed and redesigned; it never judges a search.

`--expect deeper` replaces every arm's G by the edges from click layer 1 or deeper, with the
same "works" rule. Written on 2026-12-07, before any run on instrument seeds, from the tuning
seeds 0-4 of experiments/README.md ("A lead at 4M rows"), where the edges from click layer 0
helped least in 10 of 10 world-seeds of the cascade and deep worlds at 4M training rows. The
check it is for (instrument seeds 500-509, run once):
  python experiments/ground_truth.py --study experiments/studies/search_decides.py \
      --workdir runs/ground_truth/depth_4m --seeds 10 --first-seed 500 --arms transfer \
      --expect deeper --set data.num_train=4000000 data.zipf_exponent=0.8 data.num_test=300000
(and the same with --study experiments/studies/planted_worlds.py --arms deep). It ran with
`--architectures add-one` (the criterion reads add-one only): transfer WORKS (experiments/
README.md, "The instrument check at 4M rows"), and so does deep.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from autoheri_jax import experiment
from autoheri_jax.config import apply_overrides
from autoheri_jax.data.worlds import parse_planted_edge
from autoheri_jax.metrics import BinaryScores, auc, soft_auc
from autoheri_jax.search.evidence import (
    conditional_nll,
    entire_nll,
    fit_recalibration,
    ips_conditional_nll,
)
from autoheri_jax.search.selection import ctcvr_auc
from autoheri_jax.study import arm_config, load_study, paired_test, run_dir
from autoheri_jax.train.arch_batch import (
    architecture_logits,
    ground_truth_masks,
    train_architectures,
)
from autoheri_jax.train.loop import Resumable, fingerprint
from autoheri_jax.workdir_format import read_json_file

# validation criteria: name -> True when higher is better
CRITERIA = {
    "raw_nll": False,
    "recal_nll": False,
    "recal_cvr_nll": False,
    "ips_cvr_nll": False,
    "ctcvr_auc": True,
    "cvr_auc": True,
}


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-np.asarray(z, np.float64)))


def validation_criteria(logits: np.ndarray, labels: np.ndarray) -> dict[str, list[float]]:
    """logits [A, N, T] conditional, labels [N, T] cumulative -> criterion -> [A] values."""
    out: dict[str, list[float]] = {k: [] for k in CRITERIA}
    lg, y = jnp.asarray(logits), jnp.asarray(labels, jnp.float32)
    out["raw_nll"] = [float(v) for v in entire_nll(lg, y)]
    halves = [np.arange(0, len(labels), 2), np.arange(1, len(labels), 2)]
    recal, recal_cvr = np.zeros(len(logits)), np.zeros(len(logits))
    for fit_rows, score_rows in (halves, halves[::-1]):  # cross-fitted, as the masked search
        ab = fit_recalibration(lg[:, fit_rows], y[fit_rows])
        z = ab[:, None, :, 0] + ab[:, None, :, 1] * lg[:, score_rows]
        share = len(score_rows) / len(labels)
        recal += share * np.asarray(entire_nll(z, y[score_rows]))
        recal_cvr += share * np.asarray(conditional_nll(z, y[score_rows]))
    out["recal_nll"], out["recal_cvr_nll"] = list(recal), list(recal_cvr)
    out["ips_cvr_nll"] = [float(v) for v in ips_conditional_nll(lg, y)]  # the search's own
    out["ctcvr_auc"] = ctcvr_auc(logits, labels)  # the masked search's selection criterion
    reached = labels[:, -2] > 0.5  # the rows that reached the last stage's parent
    for a in range(len(logits)):
        p = _sigmoid(logits[a])
        out["cvr_auc"].append(auc(BinaryScores(p[reached, -1], labels[reached, -1])))
    return out


def world_seed(
    study,
    arm: str,
    seed: int,
    progress: bool,
    checkpoints: Path | None = None,
    overrides: tuple[str, ...] = (),
    drop: bool = True,
) -> dict:
    """One world-seed's record. With `checkpoints`, the architecture batch checkpoints there
    (cfg.checkpoint's schedule, and on SIGTERM) and a rerun resumes it. drop=False leaves out
    the drop-one architectures (2 + E lanes instead of 2 + 2E)."""
    cfg = apply_overrides(arm_config(study, arm, seed, "data"), list(overrides))
    data = experiment.load_data(cfg, None, progress=False)
    spec = experiment.spec_for(cfg.model, data.train)  # every candidate, mask-gated
    names, masks = ground_truth_masks(spec.edges, drop)
    resumable = None
    if checkpoints is not None:
        extra = {"phase": "ground_truth", "arm": arm, "seed": seed, "architectures": names}
        fp = fingerprint(spec, cfg.retrain, masks)
        resumable = Resumable(Path(checkpoints), cfg.checkpoint, extra, fp)
    t0 = time.perf_counter()
    state, train_stats = train_architectures(
        spec,
        cfg.retrain,
        data.train,
        masks,
        desc=f"{arm}/seed{seed}",
        progress=progress,
        resumable=resumable,
    )
    params = state.params
    test_logits = architecture_logits(spec, params, masks, data.test, cfg.eval_batch_size)
    truth = data.test.true_probs
    # the last stage's conditional rate (post-click CVR in 2 stages) over every impression
    test = {"cvr_soft_auc_all": [soft_auc(_sigmoid(z[:, -1]), truth[:, -1]) for z in test_logits]}
    del test_logits
    valid_logits = architecture_logits(spec, params, masks, data.valid, cfg.eval_batch_size)
    valid = validation_criteria(valid_logits, np.asarray(data.valid.labels))
    return {
        "arm": arm,
        "seed": seed,
        "names": names,
        "masks": masks.tolist(),
        "edges": [e.name for e in spec.edges],
        "test": test,
        "valid": valid,
        "train": train_stats,
        "seconds": time.perf_counter() - t0,
    }


def _ci(values) -> dict:
    """Mean and 95% t-interval of values (a one-sample paired_test against 0)."""
    v = [x for x in values if x is not None]
    return paired_test(v, [0.0] * len(v))


def expected_set(data_cfg, edges: list[str], expect: str = "") -> list[str] | None:
    """The edges world `data_cfg` plants (the module docstring's G); None for a world without
    a planted answer (cascade). expect="deeper": the edges from click layer 1 or deeper, in
    any world (the 4M-row hypothesis of the module docstring)."""
    if expect == "deeper":
        return [e for e in edges if e.startswith("0.") and int(e.split("->")[0].split(".")[1]) >= 1]
    if data_cfg.world == "cascade":
        return None
    if data_cfg.world == "bypass":  # every edge from the click tower into the last tower
        last_task = data_cfg.num_stages - 1
        return [
            e for e in edges if e.startswith("0.") and e.split("->")[1].startswith(f"{last_task}.")
        ]
    layers = [
        (e, *map(int, (e.split("->")[0].split(".")[1], e.split("->")[1].split(".")[1])))
        for e in edges
    ]
    last = max(i for _, i, _ in layers)
    if data_cfg.world == "shallow":
        return [e for e, i, _ in layers if i < last]
    if data_cfg.world == "deep":
        return [e for e, i, _ in layers if i == last]
    if data_cfg.world == "planted":
        src, dst = parse_planted_edge(data_cfg.planted_edge)
        return [e for e, i, j in layers if i <= src and j <= dst - (src - i)]
    return []  # null


def instrument_check(col: dict, edges: list[str], planted: list[str] | None) -> dict | None:
    """The module docstring's criterion over per-seed cvr* sAUC columns `col` (name -> [seeds])."""
    if planted is None:
        return None
    add = {e: col[f"only:{e}"] - col["none"] for e in edges}
    if not planted:
        above = [e for e in edges if (_ci(add[e])["ci_lo"] or 0) > 0]
        all_above = (_ci(col["all"] - col["none"])["ci_lo"] or 0) > 0
        return {
            "expected": [],
            "best": None,
            "versus": {},
            "above_zero": above,
            "works": not above and not all_above,
        }
    best = max(planted, key=lambda e: float(np.mean(add[e])))
    rest = [r for r in edges if r not in planted]
    versus = {r: _ci(add[best] - add[r]) for r in rest}
    own = _ci(add[best])
    works = (own["ci_lo"] or 0) > 0 and all((v["ci_lo"] or 0) > 0 for v in versus.values())
    # descriptive, outside the verdict: how sharply the world plants its set, and whether
    # keeping every edge loses against the set (paired by seed, each edge retrained alone)
    inside = np.mean([col[f"only:{e}"] for e in planted], axis=0)
    described = {
        "mean_expected_minus_mean_rest": _ci(
            inside - np.mean([col[f"only:{r}"] for r in rest], axis=0)
        )
        if rest
        else {},
        "seeds_every_expected_beats_every_rest": int(
            sum(
                min(col[f"only:{e}"][k] for e in planted) > max(col[f"only:{r}"][k] for r in rest)
                for k in range(len(col["none"]))
            )
        )
        if rest
        else None,
        "best_minus_all": _ci(col[f"only:{best}"] - col["all"]),
        "mean_expected_minus_all": _ci(inside - col["all"]),
        "rest_minus_all": {r: _ci(col[f"only:{r}"] - col["all"]) for r in rest},
        "seeds": len(col["none"]),
    }
    return {
        "expected": planted,
        "best": best,
        "best_add_one": own,
        "versus": versus,
        "works": bool(works),
        **described,
    }


def summarize(
    records: dict, pick: str, search_workdir: Path | None, planted: dict | None = None
) -> dict:
    """records[arm] = [world-seed records] -> the tables of the module docstring."""
    out = {}
    for arm, recs in records.items():
        names, edges = recs[0]["names"], recs[0]["edges"]
        s = np.array([r["test"]["cvr_soft_auc_all"] for r in recs])  # seeds x A
        col = {n: s[:, i] for i, n in enumerate(names)}
        per_edge = {
            e: {
                "add_one": _ci(col[f"only:{e}"] - col["none"]),
                # absent when the batch left the drop-one architectures out (--architectures)
                "drop_one": _ci(col["all"] - col[f"drop:{e}"]) if f"drop:{e}" in col else {},
            }
            for e in edges
        }
        taus = {}
        for c, higher in CRITERIA.items():
            per_seed = []
            for r in recs:
                v = np.asarray(r["valid"][c], np.float64)
                per_seed.append(
                    stats.kendalltau(v if higher else -v, r["test"]["cvr_soft_auc_all"])[0]
                )
            taus[c] = _ci(per_seed)
        best = {}
        for c, higher in CRITERIA.items():
            picked = [
                int(np.argmax(np.asarray(r["valid"][c]) * (1 if higher else -1))) for r in recs
            ]
            best[c] = {
                "picked": [names[i] for i in picked],
                "minus_none": _ci([s[k, i] - col["none"][k] for k, i in enumerate(picked)]),
                "minus_all": _ci([s[k, i] - col["all"][k] for k, i in enumerate(picked)]),
            }
        oracle = s.max(1)
        arm_out = {
            "seeds": [r["seed"] for r in recs],
            "architectures": len(names),
            "all_minus_none": _ci(col["all"] - col["none"]),
            "per_edge": per_edge,
            "criteria_tau": taus,
            "best_on_valid": best,
            "best_on_test_minus_none": _ci(oracle - col["none"]),
            "best_on_test": [names[i] for i in s.argmax(1)],
            "instrument": instrument_check(col, edges, (planted or {}).get(arm)),
        }
        if search_workdir is not None:
            arm_out["regret"] = _regret(recs, s, names, pick, search_workdir, arm)
        out[arm] = arm_out
    return out


def _regret(recs, s, names, pick, search_workdir: Path, arm: str) -> dict:
    """Best architecture picked on validation by `pick` minus the study's derived model."""
    higher = CRITERIA[pick]
    rows, consistency = [], []
    for k, r in enumerate(recs):
        path = run_dir(search_workdir, arm, r["seed"], "data") / "results.json"
        if not path.exists():
            continue
        res = read_json_file(path)["models"]
        derived = res["autoheri"]["test"]["cvr"]["soft_auc_all"]
        i = int(np.argmax(np.asarray(r["valid"][pick]) * (1 if higher else -1)))
        rows.append((s[k, i] - derived, s[k].max() - derived, len(res["autoheri"]["edges"])))
        if "esmm" in res:  # the study's ESMM is this batch's "none" up to float rounding
            consistency.append(abs(res["esmm"]["test"]["cvr"]["soft_auc_all"] - s[k, 0]))
    return {
        "pick": pick,
        "n": len(rows),
        "best_on_valid_minus_derived": _ci([a for a, _, _ in rows]),
        "best_on_test_minus_derived": _ci([b for _, b, _ in rows]),
        "kept": [c for _, _, c in rows],
        "max_abs_esmm_vs_none": max(consistency) if consistency else None,
    }


def _instrument_lines(check: dict) -> list[str]:
    verdict = "WORKS" if check["works"] else "FAILS"
    if not check["expected"]:
        above = ", ".join(check["above_zero"]) or "none"
        return [f"instrument (null): {verdict}; edges with add-one CI above 0: {above}"]
    lines = [
        f"instrument: {verdict}; expected set {check['expected']}; best of it {check['best']}, "
        f"add-one {_cell(check['best_add_one'])}",
        "",
        f"| {check['best']} minus | paired add-one difference |",
        "| --- | --- |",
    ]
    lines += [f"| {r} | {_cell(v)} |" for r, v in check["versus"].items()]
    lines += [
        "",
        "Outside the verdict (paired by seed): mean expected edge alone - mean other edge alone "
        f"{_cell(check['mean_expected_minus_mean_rest'])}; every expected edge above every other "
        f"in {check['seeds_every_expected_beats_every_rest']} of {check['seeds']} seeds; "
        f"{check['best']} alone - all {_cell(check['best_minus_all'])}; mean expected edge "
        f"alone - all {_cell(check['mean_expected_minus_all'])}; "
        + "; ".join(f"{r} alone - all {_cell(v)}" for r, v in check["rest_minus_all"].items()),
    ]
    return lines


def _cell(t: dict, scale: float = 1.0) -> str:
    if t.get("ci_lo") is None:
        return "n/a"
    return f"{t['mean_diff'] * scale:+.4f} [{t['ci_lo'] * scale:+.4f}, {t['ci_hi'] * scale:+.4f}]"


def render(summary: dict, seeds: int) -> str:
    lines = [
        "# Ground truth: retrained architectures per world",
        "",
        f"cvr* sAUC differences, mean [95% t-CI] over {seeds} seeds (world, data and "
        "retrain seed k). add-one: only k - none; drop-one: all - all but k.",
        "",
    ]
    for arm, a in summary.items():
        lines += [
            f"## {arm}",
            "",
            f"{a['architectures']} architectures retrained together per seed.",
            "",
            f"all - none: {_cell(a['all_minus_none'])}; best on test - "
            f"none: {_cell(a['best_on_test_minus_none'])}",
            "",
            "| edge | add-one | drop-one |",
            "| --- | --- | --- |",
        ]
        for e, v in a["per_edge"].items():
            lines.append(f"| {e} | {_cell(v['add_one'])} | {_cell(v['drop_one'])} |")
        if a.get("instrument") is not None:
            lines += ["", *_instrument_lines(a["instrument"])]
        lines += [
            "",
            "| validation criterion | Kendall tau vs test cvr* sAUC | picked - none "
            "| picked - all |",
            "| --- | --- | --- | --- |",
        ]
        for c, t in a["criteria_tau"].items():
            b = a["best_on_valid"][c]
            lines.append(
                f"| {c} | {_cell(t)} | {_cell(b['minus_none'])} | {_cell(b['minus_all'])} |"
            )
        if "regret" in a:
            r = a["regret"]
            lines += [
                "",
                f"regret of the study's derived model (n={r['n']}; kept {r['kept']}): "
                f"best picked on validation by {r['pick']} - derived "
                f"{_cell(r['best_on_valid_minus_derived'])}; best on test - derived "
                f"{_cell(r['best_on_test_minus_derived'])}; |study ESMM - none| <= "
                f"{r['max_abs_esmm_vs_none']}",
            ]
        lines.append("")
    return "\n".join(lines)


def figure(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(summary), figsize=(6 * len(summary), 4), squeeze=False)
    for ax, (arm, a) in zip(axes[0], summary.items(), strict=True):
        edges = list(a["per_edge"])
        x = np.arange(len(edges))
        for off, key, label in (
            (-0.2, "add_one", "add-one (only k - none)"),
            (0.2, "drop_one", "drop-one (all - all but k)"),
        ):
            t = [a["per_edge"][e][key] for e in edges]
            if not all(t):  # the batch left this kind of architecture out
                continue
            mean = np.array([v["mean_diff"] for v in t])
            lo = np.array([v["mean_diff"] if v["ci_lo"] is None else v["ci_lo"] for v in t])
            hi = np.array([v["mean_diff"] if v["ci_hi"] is None else v["ci_hi"] for v in t])
            err = np.stack([mean - lo, hi - mean])
            ax.errorbar(x + off, mean, yerr=err, fmt="o", capsize=3, label=label)
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xticks(x, edges, rotation=45)
        ax.set_title(f"{arm}: cvr* sAUC difference, 95% CI")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--study", type=Path, required=True, help="a study file: its arms are the worlds"
    )
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument(
        "--first-seed",
        type=int,
        default=0,
        help="seeds first-seed .. first-seed + seeds - 1 (500+: instrument checks)",
    )
    ap.add_argument("--arms", nargs="*", default=None, help="a subset of the study's arms")
    ap.add_argument("--search-workdir", type=Path, default=None, help="the study's workdir")
    ap.add_argument(
        "--pick",
        default="recal_nll",
        choices=list(CRITERIA),
        help="criterion that picks the best architecture for the regret",
    )
    ap.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="overrides applied after each arm's own (e.g. data.zipf_exponent=0.5)",
    )
    ap.add_argument(
        "--expect",
        choices=("deeper",),
        default="",
        help="replace each world's expected set: deeper = edges from click layer 1 or deeper",
    )
    ap.add_argument(
        "--architectures",
        choices=("full", "add-one"),
        default="full",
        help="add-one leaves out the E drop-one architectures: 2 + E lanes, enough for the "
        "instrument criterion (add-one only) at about 60%% of the cost",
    )
    ap.add_argument("--progress", action="store_true")
    args = ap.parse_args(argv)
    study = load_study(args.study)
    arms = args.arms or list(study.arms)
    records = {}
    for arm in arms:
        records[arm] = []
        for k in range(args.first_seed, args.first_seed + args.seeds):
            path = args.workdir / arm / f"seed{k}.json"
            if not path.exists():
                ckpt = path.with_suffix(".ckpt")
                rec = world_seed(
                    study,
                    arm,
                    k,
                    args.progress,
                    ckpt,
                    tuple(args.set),
                    drop=args.architectures == "full",
                )
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(rec))
                shutil.rmtree(ckpt, ignore_errors=True)  # the record now holds what they did
                print(f"[ground truth] {arm} seed {k}: {rec['seconds']:.0f}s", flush=True)
            records[arm].append(json.loads(path.read_text()))
    planted = {}
    for arm, recs in records.items():
        data_cfg = apply_overrides(arm_config(study, arm, recs[0]["seed"], "data"), args.set).data
        planted[arm] = expected_set(data_cfg, recs[0]["edges"], args.expect)
    summary = summarize(records, args.pick, args.search_workdir, planted)
    (args.workdir / "ground_truth.json").write_text(json.dumps(summary, indent=1))
    text = render(summary, args.seeds)
    (args.workdir / "ground_truth.md").write_text(text)
    figure(summary, args.workdir / "ground_truth.png")
    print(text)
    jax.clear_caches()


if __name__ == "__main__":
    main()
