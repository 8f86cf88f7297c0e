"""Every evidence criterion on the supernets a study already trained: which edges each would keep.

Command (the "criteria on the same supernets" table in experiments/README.md):
  python experiments/redecide.py runs/studies/search_decides runs/studies/held_out \
      --out runs/redecide.json

A masked search's decision is a function of the trained supernet and the validation split only,
so each criterion of autoheri_jax/search/evidence.py (CRITERIA) can be applied to the same
supernet without retraining: for every `<study>/<arm>/<seed>` workdir (config.json plus
models/autoheri_search/params) this rebuilds the data from the saved config, restores the
supernet and scores every edge's paired on/off contrast under every criterion, with the saved
config's threshold, contexts and validation batches. Nothing here reads the test split: the
table says how many edges each rule keeps per world, which is how a default can be chosen
without looking at test metrics (the ground truth's rank agreement, experiments/ground_truth.py,
says which criterion to trust; this says whether that criterion can clear the threshold).
About 25 s per workdir on 2 CPU cores.
Expected: see experiments/README.md ("Criteria on the same supernets").
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from autoheri_jax import artifacts, experiment
from autoheri_jax.config import Config, from_dict
from autoheri_jax.search import evidence
from autoheri_jax.train.step import abstract_state
from autoheri_jax.workdir_format import read_json_file


def workdirs(study_dir: Path) -> list[Path]:
    """Every run directory of a study workdir that holds a trained masked supernet."""
    found = sorted(p.parents[2] for p in study_dir.glob("*/*/models/autoheri_search/train.json"))
    if not found:
        raise SystemExit(f"{study_dir}: no <arm>/<seed>/models/autoheri_search in it")
    return found


def redecide(run: Path) -> dict:
    """{criterion: {"kept": [E] bool, "z": [E]}} of one run's supernet, plus its edges."""
    cfg = from_dict(Config, read_json_file(run / "config.json"))
    if cfg.edge_search.method != "masked":
        raise SystemExit(f"{run}: searched with edge_search.method={cfg.edge_search.method}")
    wd = artifacts.Workdir(run)
    data = experiment.load_data(cfg, None, progress=False)
    spec, tcfg = experiment.supernet_spec(cfg, data.train)
    params = wd.load_params(
        experiment.SEARCHED, abstract_state(spec, tcfg).params, made_by="search"
    )
    ecfg = cfg.edge_search
    masks = evidence.contrast_masks(spec.num_edges, ecfg.contexts, ecfg.keep_prob, ecfg.seed)
    batches = evidence.validation_batches(data.valid, ecfg.batch_size, ecfg.valid_batches)
    d = evidence.contrasts(spec, params, batches, masks)
    out = {"edges": [e.name for e in spec.edges], "rules": {}}
    for name in evidence.CRITERIA:
        z = evidence.z_scores(d[name])["z"]
        _, kept = evidence.decide(z, ecfg.threshold, ecfg.undecided)
        out["rules"][name] = {"kept": kept.tolist(), "z": [float(v) for v in z]}
    return out


def render(records: dict) -> str:
    """Markdown: per study/arm and criterion, the kept counts per seed and their mean."""
    lines = ["| study / world | criterion | kept per seed | mean |", "| --- | --- | --- | --- |"]
    by_arm: dict[str, list[dict]] = {}
    for key, rec in records.items():
        study, arm, _ = key.rsplit("/", 2)
        by_arm.setdefault(f"{Path(study).name} / {arm}", []).append(rec)
    for arm, recs in by_arm.items():
        for name in evidence.CRITERIA:
            counts = [int(np.sum(r["rules"][name]["kept"])) for r in recs]
            per_seed = ",".join(str(c) for c in counts)
            lines.append(f"| {arm} | {name} | {per_seed} | {np.mean(counts):.1f} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("studies", nargs="+", type=Path, help="study workdirs (autoheri study)")
    ap.add_argument("--out", type=Path, help="write every run's z and decisions here (JSON)")
    args = ap.parse_args(argv)
    records = {}
    for study in args.studies:
        for run in workdirs(study):
            records[str(run)] = redecide(run)
            counts = {k: int(np.sum(v["kept"])) for k, v in records[str(run)]["rules"].items()}
            print(run, counts, flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(records, indent=1))
    print(render(records))


if __name__ == "__main__":
    main()
