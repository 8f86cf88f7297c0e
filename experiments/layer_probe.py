"""Which click-tower layer carries which hidden quantity of a simulated world? A linear probe.

An edge i->j can hand the conversion tower only what click layer i holds. Before a world's
ground truth is run, this says whether the world's design can work at all: a `shallow` world
needs an early click layer to hold the quantity conversion reuses better than the last layer
does, a `deep` world the reverse. On a tuning seed, validation split only.

Command:
  python experiments/layer_probe.py "data.world=shallow" "data.world=deep"

Each argument is one world: comma-separated `--set` overrides of experiments/configs/study_base.py
(plus data.seed=0, a tuning seed, unless given). ESMM trains with the retrain budget (one lane of
the architecture batch, as the ground truth trains it); then, on half of the validation rows, a
ridge regression from each representation (the embedded input x, click layers 0..L-1) to each
hidden quantity is fitted and its R² measured on the other half. Quantities: s_a (the click
stage's first interaction), the click logit's offset and the conversion logit's offset (without
intercepts, from simulator.hidden_terms). About 60 s a world on 2 CPU cores.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import jax
import numpy as np

from autoheri_jax import experiment
from autoheri_jax.config import load_config, split_overrides
from autoheri_jax.data.simulator import hidden_terms
from autoheri_jax.data.sources import world_args
from autoheri_jax.model.embedding import model_input
from autoheri_jax.model.network import _ACTIVATIONS
from autoheri_jax.train.arch_batch import train_architectures

BASE = Path(__file__).resolve().parent / "configs" / "study_base.py"
RIDGE = 1e-3  # relative to the mean feature variance: keeps the 64-unit fits well posed


def world_quantities(d, rows: slice) -> dict[str, np.ndarray]:
    """The hidden quantities of the rows `rows` of the world's first draw (train then valid)."""
    h = hidden_terms(num_rows=d.num_train + d.num_valid, **world_args(d))
    return {
        "s_a": h["interactions"][0][rows],
        "click offset": h["offsets"][0][rows],
        "conversion offset": h["offsets"][1][rows],
    }


def click_layers(params, spec, batch) -> list[np.ndarray]:
    """[x, h_0, ..., h_{L-1}] of the click tower (task 0 has no incoming edge)."""
    act = _ACTIVATIONS[spec.model.activation]
    x = model_input(params, spec, batch)
    tower, out, h = params["towers"]["task_0"], [x], x
    for j in range(len(spec.model.hidden)):
        h = act(h @ tower[f"layer_{j}"]["kernel"] + tower[f"layer_{j}"]["bias"])
        out.append(h)
    return [np.asarray(v, np.float64) for v in out]


def probe_r2(features: np.ndarray, target: np.ndarray) -> float:
    """Held-out R² of a ridge regression target ~ features (fit on the first half)."""
    n = len(target) // 2
    f = features - features[:n].mean(0)
    # no per-unit scaling: a unit nearly dead on the fitting half would be blown up to noise
    penalty = RIDGE * n * max(float(f[:n].var(0).mean()), 1e-12)
    a = np.c_[f[:n], np.ones(n)]
    coef = np.linalg.solve(a.T @ a + penalty * np.eye(a.shape[1]), a.T @ target[:n])
    pred = np.c_[f[n:], np.ones(len(f) - n)] @ coef
    rest = target[n:]
    return float(1.0 - np.mean((rest - pred) ** 2) / np.var(rest))


def probe(overrides: list[str]) -> dict[str, list[float]]:
    cfg = load_config(BASE, ["data.num_test=1000", "data.seed=0", *overrides])
    data = experiment.load_data(cfg, None, progress=False)
    spec = experiment.spec_for(cfg.model, data.train)
    masks = np.zeros((1, spec.num_edges), np.float32)
    state, _ = train_architectures(spec, cfg.retrain, data.train, masks, desc="probe")
    params = jax.tree.map(lambda v: v[0], state.params)
    n = min(data.valid.num_rows, 40_000)
    batch = data.valid.batch(np.arange(n))
    batch.pop("labels")
    reps = click_layers(params, spec, batch)
    d = cfg.data
    quantities = world_quantities(d, slice(d.num_train, d.num_train + n))
    return {name: [probe_r2(r, q) for r in reps] for name, q in quantities.items()}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("worlds", nargs="+", help="one world: comma-separated key=value overrides")
    args = ap.parse_args(argv)
    print("| world | quantity | R² from x | click layer 0 | layer 1 | layer 2 |")
    print("| --- | --- | --- | --- | --- | --- |")
    for world in args.worlds:
        for name, r2 in probe(split_overrides(world)).items():
            print(f"| {world} | {name} | " + " | ".join(f"{v:.3f}" for v in r2) + " |", flush=True)


if __name__ == "__main__":
    main()
