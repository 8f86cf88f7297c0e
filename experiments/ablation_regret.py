"""The ablation search's choices against a ground truth of the same worlds and seeds.

Command (experiments/README.md, "The ground truth on evaluation seeds 1010-1019"):
  python experiments/ground_truth.py --study experiments/studies/depth_eval_ablation.py \
      --workdir runs/ground_truth/eval_ablation --seeds 10 --first-seed 1010 \
      --arms deep4m_ablation_cvr --architectures add-one --pick cvr_auc
  python experiments/ablation_regret.py runs/ground_truth/eval_ablation \
      --arm deep4m_ablation_cvr --first-seed 1010 --chosen '0.1->1.0' '0.2->1.2' '0.1->1.1' \
      '0.1->1.0' '0.0->1.0' '0.2->1.0' '0.1->1.2' all '0.1->1.1' '0.2->1.0'

`--chosen` lists the edge each seed's search kept (`all`, `none` or one edge; the study's
kept_depth.py prints them), in seed order. The ground truth's add-one batch (no edge, all,
each edge alone) holds the same lanes as the search's batch; on the machine and code that ran
the search they are the same trainings, so its best-on-validation lane differs from the
search's choice only where the margin kept a simpler lane. Per seed it prints the chosen
lane, the lane the ground truth ranks first on validation (`--pick`, no margin) and on test
(cvr* sAUC: biased upward, the maximum of 11 noisy scores); then, paired by seed with a 95%
t-interval: chosen - none (= AutoHERI - ESMM), chosen - all, regret (best on validation -
chosen) and best on test - chosen, and how often the validation pick has the right depth
(at least one edge, none from click layer 0).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy import stats


def interval(x) -> tuple[float, float, float]:
    """Mean and its 95% t-interval (the mean twice for fewer than 2 values or no spread)."""
    x = np.asarray(x, np.float64)
    m = float(x.mean())
    if len(x) < 2 or x.std(ddof=1) == 0:
        return m, m, m
    h = float(stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x)))
    return m, m - h, m + h


def lane_name(choice: str) -> str:
    return choice if choice in ("all", "none") else f"only:{choice}"


def right_depth(lane: str) -> bool:
    return lane == "all" or (lane.startswith("only:") and not lane[5:].startswith("0.0->"))


def compare(record: dict, choice: str, pick: str) -> dict:
    """One seed: the chosen lane against the ground truth's picks (cvr* sAUC on test)."""
    names, test = record["names"], np.asarray(record["test"]["cvr_soft_auc_all"])
    chosen = names.index(lane_name(choice))
    best = int(np.argmax(record["valid"][pick]))
    return {
        "seed": record["seed"],
        "chosen": names[chosen],
        "best_valid": names[best],
        "best_test": names[int(np.argmax(test))],
        "chosen - none": test[chosen] - test[names.index("none")],
        "chosen - all": test[chosen] - test[names.index("all")],
        "regret": test[best] - test[chosen],
        "best test - chosen": test.max() - test[chosen],
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("workdir", type=Path, help="ground_truth.py's --workdir")
    ap.add_argument("--arm", required=True)
    ap.add_argument("--first-seed", type=int, required=True)
    ap.add_argument("--chosen", nargs="+", required=True, help="each seed's kept edge(s)")
    ap.add_argument("--pick", default="cvr_auc", help="the validation criterion of the regret")
    args = ap.parse_args(argv)
    rows = []
    for k, choice in enumerate(args.chosen):
        path = args.workdir / args.arm / f"seed{args.first_seed + k}.json"
        if not path.exists():
            raise SystemExit(f"{path}: no ground-truth record for seed {args.first_seed + k}")
        rows.append(compare(json.loads(path.read_text()), choice, args.pick))
    print(f"## {args.arm}: {len(rows)} seeds, regret picked by {args.pick}")
    for r in rows:
        print(
            f"  {r['seed']}: chosen {r['chosen']:<14} best on validation {r['best_valid']:<14}"
            f" best on test {r['best_test']:<14} regret {r['regret']:+.4f}"
        )
    for key in ("chosen - none", "chosen - all", "regret", "best test - chosen"):
        m, lo, hi = interval([r[key] for r in rows])
        print(f"  {key:<20} {m:+.4f} [{lo:+.4f}, {hi:+.4f}]")
    same = sum(r["best_valid"] == r["chosen"] for r in rows)
    depth = sum(right_depth(r["best_valid"]) for r in rows)
    print(f"  validation pick == chosen: {same}/{len(rows)}; right depth: {depth}/{len(rows)}")


if __name__ == "__main__":
    main()
