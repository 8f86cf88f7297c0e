"""The common mode of every edge decision rule: do the nine per-edge z share one sign, and how
closely do they follow a pure intercept shift of the CVR logit? Before and after each rule's
correction.

Command (the table in experiments/README.md, "The common mode of the decision rules"):
  python experiments/gate_evidence.py --seeds 5 --cascades 0.95 0 --out runs/gate_evidence.json

Per world (experiments/configs/study_base.py with data.cascade_strength c and data.seed =
search.seed = k, as the studies' seed k) two supernets are trained for the search budget:

  gradient  the relaxed supernet with every edge logit frozen at its start (gate 0.5), the
            evidence the gradient search follows: d_k = -dL/dg_k per validation batch.
            Its intercept part replaces each row's logit sensitivity dz/dg_k by its batch mean
            (what a pure intercept shift of the same size would give, to first order);
            "after" is d minus that part.
  masked    the supernet trained under Bernoulli(0.5) edge masks and judged by its paired
            on/off contrasts (autoheri_jax/search/evidence.py): raw_nll before any correction;
            shift_nll (raw minus the pure intercept shift of each pair's mean logit change)
            and recal_nll / recal_cvr_nll (the cross-fitted per-mask Platt refit) after.

Prints per world and rule: same_sign (all nine z of one sign), intercept_corr (correlation
over edges of the mean contrasts with their intercept parts: 1 = the rule sees calibration
only) and the z's; then per regime the share of worlds whose z share one sign and the mean
correlation. About 50 s per world on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from autoheri_jax import experiment
from autoheri_jax.config import GradientSearch, MaskedSearch, load_config, supernet_config
from autoheri_jax.model.gates import edge_probabilities
from autoheri_jax.model.losses import entire_space_bce
from autoheri_jax.model.network import forward
from autoheri_jax.search import evidence
from autoheri_jax.train.fit import train_model

BASE = Path(__file__).resolve().parent / "configs" / "study_base.py"
MASKED_RULES = {
    "masked_raw": "raw_nll",
    "masked_shift": "shift_nll",
    "masked_recal": "recal_nll",
    "masked_recal_cvr": "recal_cvr_nll",
}


def gradient_contrasts(spec, params, batches) -> tuple[np.ndarray, np.ndarray]:
    """[nb, E] -dL/dg_k at the supernet's gates and its pure-intercept part (see docstring)."""
    gates = edge_probabilities(params, spec)

    @jax.jit
    def one(batch, labels):
        z_of = lambda g: forward(params, spec, batch, gates=g)
        jac = jax.jacfwd(z_of)(gates)  # B x T x E
        dl_dz = jax.grad(lambda z: jnp.sum(entire_space_bce(z, labels)))(z_of(gates))  # B x T
        d = -jnp.einsum("bt,bte->e", dl_dz, jac)
        intercept = -jnp.einsum("t,te->e", dl_dz.sum(0), jac.mean(0))
        return d, intercept

    rows = [one({k: v for k, v in b.items() if k != "labels"}, b["labels"]) for b in batches]
    return np.stack([np.asarray(d) for d, _ in rows]), np.stack([np.asarray(i) for _, i in rows])


def world(cascade: float, seed: int, overrides: list[str], batches: int) -> dict:
    sets = [f"data.cascade_strength={cascade}", f"data.seed={seed}", f"search.seed={seed}"]
    cfg = load_config(BASE, [*sets, *overrides])
    data = experiment.load_data(cfg, None, progress=False)
    out = {"cascade": cascade, "seed": seed}
    # the gradient rule: weights only, every gate held at its start
    # sgd at lr 1e-30 moves no logit off 0 in float32: every gate stays exactly 0.5
    still = GradientSearch(
        arch_warmup_steps=0, arch_lr=1e-30, arch_optimizer="sgd", entropy_weight=0.0
    )
    frozen = supernet_config(cfg.search, arch=still)
    grad_spec = experiment.spec_for(cfg.model, data.train, searched=True)
    state, _ = _train(grad_spec, frozen, data.train)
    es = cfg.edge_search if isinstance(cfg.edge_search, MaskedSearch) else MaskedSearch()
    es = dataclasses.replace(es, valid_batches=batches)
    vb = evidence.validation_batches(data.valid, es.batch_size, batches)
    d, intercept = gradient_contrasts(grad_spec, state.params, vb)
    out["gradient"] = {
        "before": evidence.common_mode(d, intercept).to_json(),
        "after": evidence.common_mode(d - intercept, intercept).to_json(),
    }
    # the masked rules: one supernet, every correction
    masked_cfg = dataclasses.replace(cfg, edge_search=es)
    spec, tcfg = experiment.supernet_spec(masked_cfg, data.train)
    state, _ = _train(spec, tcfg, data.train)
    ev = evidence.edge_evidence(spec, state.params, data.valid, masked_cfg.edge_search).evidence
    for rule, criterion in MASKED_RULES.items():
        out[rule] = ev.common_mode[criterion].to_json()
    return out


def _train(spec, cfg, data):
    return train_model(spec, cfg, data, desc="gate evidence", progress=False)


def summarize(worlds: list[dict]) -> dict:
    """Per cascade and rule: share of worlds whose z share one sign, mean intercept corr."""
    rules = ["gradient.before", "gradient.after", *MASKED_RULES]
    out = {}
    for c in sorted({w["cascade"] for w in worlds}, reverse=True):
        ws = [w for w in worlds if w["cascade"] == c]
        row = {}
        for r in rules:
            head, _, tail = r.partition(".")
            got = [w[head][tail] if tail else w[head] for w in ws]
            corr = [g["intercept_corr"] for g in got if g["intercept_corr"] is not None]
            row[r] = {
                "same_sign_share": float(np.mean([g["same_sign"] for g in got])),
                "intercept_corr_mean": float(np.mean(corr)) if corr else None,
                "intercept_corr_range": [float(min(corr)), float(max(corr))] if corr else None,
                "worlds": len(ws),
            }
        out[str(c)] = row
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=5, help="worlds per cascade: seeds 0..n-1")
    ap.add_argument("--cascades", type=float, nargs="+", default=[0.95, 0.0])
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--batches", type=int, default=100, help="validation batches scored")
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = ap.parse_args(argv)
    worlds = []
    for c in args.cascades:
        for k in range(args.seeds):
            w = world(c, k, args.set, args.batches)
            print(json.dumps(w), flush=True)
            worlds.append(w)
    summary = summarize(worlds)
    print(json.dumps(summary, indent=1))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"worlds": worlds, "summary": summary}, indent=1))


if __name__ == "__main__":
    main()
