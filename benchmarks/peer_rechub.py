"""This project's ESMM and AITM against torch-rechub's, end to end, on one split, alternated.

Command:
  python benchmarks/peer_rechub.py --torch-python /work/venv-peer/bin/python
                                   [--rounds 3] [--models esmm,aitm] [--train 200000]
                                   [--test 50000] [--batch-size 1024] [--epochs 1]
                                   [--data DIR] [--profile] [--json out.json]

torch and torch-rechub are not this project's dependencies: install
benchmarks/requirements-peer.txt into a separate virtual environment and name its interpreter
with --torch-python (docs/benchmarks.md, "Side by side with torch-rechub"). This script itself
imports neither torch nor jax: each run is a child process, `--child project` under this
interpreter, `--child rechub` under --torch-python, and both children read one settings file
(the same rows, batch size, epochs, learning rate, embedding width, tower widths, seed, thread
count), so the two sides differ only in the library.

The split: `--train` / `--test` impressions of the project's funnel simulator (data.seed
--seed, 8 dense features), written once as a torch-rechub Ali-CCP CSV directory (header
click,purchase, the 23 sparse ids, the 8 dense D* columns): train.csv and test.csv. No
validation file: neither side validates (the project's valid_fraction is 0).
`--data DIR` uses an existing directory of that format instead (train.csv and test.csv).

What each side times, inside its process (interpreter start and imports are reported apart):
  load      the CSV files to training-ready arrays. Project: `autoheri prepare`'s conversion to
            a store (fresh each run) and opening it; torch-rechub: pandas.read_csv of the three
            files and its DataGenerator / DataLoader, as its Ali-CCP example does.
  train     `--epochs` passes at `--batch-size`, compile included. Project: train/loop.train
            (the grain pipeline, lazy Adam on the embeddings); torch-rechub: MTLTrainer's own
            train_one_epoch (no validation pass, no checkpoint write: the project side does
            neither).
  evaluate  the test split's pCTR and pCTCVR at `--eval-batch-size`. Project:
            predict_dataset; torch-rechub: model.eval() and a no_grad forward over a DataLoader
            (a leaner loop than MTLTrainer.evaluate's per-row .tolist()).
End to end = load + train + evaluate; examples/s = train rows x epochs / end to end. Rounds
alternate which side runs first. Both sides' predictions are scored by one AUC function here,
after checking that both read the same test labels in the same order.

Models (with the differences the two libraries impose):
  esmm  embed 16 per sparse field, two towers 128-64-32 + a logit, loss BCE(ctr) + BCE(ctcvr).
        torch-rechub's ESMM reads the sparse fields only and puts BatchNorm after every hidden
        Linear; the project's ESMM also reads the 8 dense columns and has no BatchNorm.
  aitm  one 128-64-32 tower per task, the info gate (Linear d->d + ReLU) and the 2-item
        attention from click to purchase, a Linear d->1 head; loss BCE(click) + BCE(purchase)
        (torch-rechub: their mean). The project's label-constraint calibrator is off
        (aitm_constraint_weight=0), which torch-rechub's AITM does not have. torch-rechub adds
        BatchNorm after every hidden Linear, including the info gate's.
Optimizer: Adam at --lr, no weight decay, on both; the project's embeddings use lazy
(row-sparse) Adam, torch-rechub's nn.Embedding dense gradients and dense Adam.
Threads: torch.set_num_threads(--threads) and XLA's CPU client use the same count (default:
the cores this process may run on).

--xla-cache DIR turns on the persistent compilation cache `autoheri` uses (off by default, so
each project run compiles its steps: the cold figure). --profile adds, in the first round, after the
timed run and outside it, the project step alone (batches on the device), the step fed by the grain
pipeline and the pipeline alone (benchmarks/measure.bench_train), next to the compile
seconds jax reported during the timed run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
MODELS = ("esmm", "aitm")
SIDES = ("project", "rechub")
LABELS = ["click", "purchase"]
SPARSE = [
    "101",
    "121",
    "122",
    "124",
    "125",
    "126",
    "127",
    "128",
    "129",
    "205",
    "206",
    "207",
    "210",
    "216",
    "508",
    "509",
    "702",
    "853",
    "301",
    "109_14",
    "110_14",
    "127_14",
    "150_14",
]
DENSE = ["D109_14", "D110_14", "D127_14", "D150_14", "D508", "D509", "D702", "D853"]
HEADER = [*LABELS, *SPARSE, *DENSE]
ESMM_ITEM_FIELDS = ["129", "205", "206", "207", "210", "216"]  # torch-rechub example's split
SPLIT_FILES = {"train": "train.csv", "test": "test.csv"}


def default_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--torch-python",
        default=os.environ.get("PEER_PYTHON", ""),
        help="interpreter of the virtual environment with torch and torch-rechub",
    )
    ap.add_argument("--models", default="esmm,aitm", help="comma list of esmm, aitm")
    ap.add_argument("--rounds", type=int, default=3, help="alternations per model")
    ap.add_argument("--train", type=int, default=200_000, help="simulated train rows")
    ap.add_argument("--test", type=int, default=50_000, help="simulated test rows")
    ap.add_argument("--data", default="", help="an existing torch-rechub Ali-CCP CSV dir")
    ap.add_argument("--workdir", default="", help="where the split and runs go (default: tmp)")
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--eval-batch-size", type=int, default=8192)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--embed-dim", type=int, default=16)
    ap.add_argument("--hidden", default="128,64,32", help="tower widths (both models)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="0: the cores this process may use")
    ap.add_argument("--profile", action="store_true", help="project side: where time goes")
    ap.add_argument(
        "--xla-cache",
        default="",
        help="project side: the CLI's persistent XLA cache in this dir (default off:"
        " every run compiles)",
    )
    ap.add_argument("--only", choices=SIDES, default=None, help="run one side (no ratio)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--child", choices=SIDES, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--settings", default=None, help=argparse.SUPPRESS)
    return ap


def settings(args: argparse.Namespace, model: str, data_dir: str | Path) -> dict:
    """What one run of `model` gets, whichever side runs it: the children read this alone."""
    if model not in MODELS:
        raise SystemExit(f"--models: {model!r} is not one of {MODELS}")
    hidden = [int(h) for h in str(args.hidden).split(",") if h.strip()]
    if not hidden or min(hidden) < 1 or min(args.batch_size, args.epochs, args.embed_dim) < 1:
        raise SystemExit("--hidden, --batch-size, --epochs, --embed-dim must be positive")
    files = {s: str(Path(data_dir) / f) for s, f in SPLIT_FILES.items()}
    missing = [f for f in files.values() if not Path(f).is_file()]
    if missing:
        raise SystemExit(f"--data: {missing} missing (needs {sorted(SPLIT_FILES.values())})")
    return {
        "model": model,
        "data_dir": str(data_dir),
        "files": files,
        "batch_size": args.batch_size,
        "eval_batch_size": args.eval_batch_size,
        "epochs": args.epochs,
        "lr": args.lr,
        "embed_dim": args.embed_dim,
        "hidden": hidden,
        "seed": args.seed,
        "threads": args.threads or default_threads(),
        "profile": bool(args.profile),
        "xla_cache": str(args.xla_cache),
    }


# ---------------------------------------------------------------------------------- the split


def write_split(out: str | Path, num_train: int, num_test: int, seed: int = 0) -> dict:
    """The simulator's impressions as a torch-rechub Ali-CCP CSV directory; rows per file."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pcsv

    from autoheri_jax.config import DataConfig
    from autoheri_jax.data.sources import simulated_splits

    d = DataConfig(
        num_train=num_train, num_valid=0, num_test=num_test, num_dense=len(DENSE), seed=seed
    )
    splits = simulated_splits(d)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = {}
    for name, part in (("train", splits.train), ("test", splits.test)):
        if list(part.field_names) != SPARSE:
            raise RuntimeError(f"simulator fields {part.field_names} != {SPARSE}")
        cols = [pa.array(part.labels[:, i].astype(np.int8)) for i in range(2)]
        cols += [pa.array(part.sparse[:, i]) for i in range(len(SPARSE))]
        cols += [pa.array(np.round(part.dense[:, i], 6)) for i in range(len(DENSE))]
        opts = pcsv.WriteOptions(include_header=False)  # pyarrow would quote the header
        with open(out / SPLIT_FILES[name], "wb") as fh:
            fh.write((",".join(HEADER) + "\n").encode())
            pcsv.write_csv(pa.table(cols, names=HEADER), fh, opts)
        rows[name] = part.num_rows
    (out / "split.json").write_text(json.dumps({"rows": rows, "simulator": repr(d)}))
    return rows


def split_rows(data_dir: str | Path) -> dict:
    """Data rows per file of a CSV directory (lines after the header)."""
    out = {}
    for s, f in SPLIT_FILES.items():
        p = Path(data_dir) / f
        if p.is_file():
            with open(p, "rb") as fh:
                out[s] = sum(1 for line in fh if line.strip()) - 1
    return out


# ---------------------------------------------------------------------------- the two children


def _now() -> float:
    return time.perf_counter()


def run_project(s: dict, out: Path) -> dict:
    t_imp = _now()
    if s["threads"] < default_threads():  # XLA's CPU client otherwise uses every core
        os.environ["XLA_FLAGS"] = (
            os.environ.get("XLA_FLAGS", "")
            + f" --xla_cpu_multi_thread_eigen=true intra_op_parallelism_threads={s['threads']}"
        )
    import dataclasses

    import jax
    import jax.monitoring
    import numpy as np

    from autoheri_jax.config import DataConfig, ModelConfig, TrainConfig
    from autoheri_jax.data.sources import load_splits
    from autoheri_jax.experiment import spec_for
    from autoheri_jax.model.variants import VARIANTS
    from autoheri_jax.train.fit import train_model
    from autoheri_jax.train.predict import predict_dataset

    compile_s = {"total": 0.0}

    def on_duration(event: str, secs: float, **_kw) -> None:
        if event.endswith("backend_compile_duration"):
            compile_s["total"] += secs

    jax.monitoring.register_event_duration_secs_listener(on_duration)
    if s.get("xla_cache"):  # as `autoheri` runs: steps compiled by an earlier run are reused
        os.environ["AUTOHERI_JAX_CACHE"] = s["xla_cache"]
        from autoheri_jax.cli import enable_compilation_cache

        enable_compilation_cache()
    jax.devices()
    imports_s = _now() - t_imp

    with tempfile.TemporaryDirectory(dir=out) as cache:
        t0 = _now()
        # no validation split: the train file is trained on whole, as torch-rechub's side does
        d = DataConfig(
            source="files", path=s["data_dir"], format="rechub_aliccp", valid_fraction=0.0
        )
        splits = load_splits(d, Path(cache), progress=False)
        load_s = _now() - t0

        base = ModelConfig(embed_dim=s["embed_dim"], hidden=tuple(s["hidden"]))
        if s["model"] == "aitm":
            model = dataclasses.replace(VARIANTS["aitm"](base), aitm_constraint_weight=0.0)
        else:
            model = VARIANTS["esmm"](base)
        tcfg = TrainConfig(
            epochs=s["epochs"],
            batch_size=s["batch_size"],
            lr=s["lr"],
            seed=s["seed"],
            log_every=10**9,
        )
        t1 = _now()
        spec = spec_for(model, splits.train)
        c0 = compile_s["total"]
        state, stats = train_model(
            spec, tcfg, splits.train, desc=f"peer:{s['model']}", progress=False
        )
        train_s = _now() - t1
        compile_train = compile_s["total"] - c0

        t2 = _now()
        _, entire = predict_dataset(spec, state.params, splits.test, s["eval_batch_size"])
        eval_s = _now() - t2
        compile_eval = compile_s["total"] - c0 - compile_train
        np.save(out / "preds.npy", entire[:, :2].astype(np.float32))
        np.save(out / "labels.npy", np.asarray(splits.test.labels)[:, :2].astype(np.int8))
        res = {
            "imports_s": imports_s,
            "load_s": load_s,
            "train_s": train_s,
            "eval_s": eval_s,
            "train_rows": splits.train.num_rows,
            "test_rows": splits.test.num_rows,
            "steps": stats["steps"],
            "compile_train_s": compile_train,
            "compile_eval_s": compile_eval,
            "table_rows": spec.table_rows,
            "versions": {"jax": jax.__version__, "backend": jax.default_backend()},
        }
        if s["profile"]:
            sys.path.insert(0, str(HERE))
            import measure

            b = measure.bench_train(spec, tcfg, splits.train, steps=20, repeats=3)
            res["profile"] = {
                "step_ms_device": b["device"]["step_ms"],
                "step_ms_pipeline": b["pipeline"]["step_ms"],
                "pipeline_only_ms": 1e3 * s["batch_size"] / b["pipeline_only_examples_per_s"],
                "first_call_s": b["first_call_s"],
            }
    return res


def run_rechub(s: dict, out: Path) -> dict:
    t_imp = _now()
    import numpy as np
    import pandas as pd
    import torch
    import torch_rechub
    from torch.utils.data import DataLoader
    from torch_rechub.basic.features import DenseFeature, SparseFeature
    from torch_rechub.models.multi_task import AITM, ESMM
    from torch_rechub.trainers import MTLTrainer
    from torch_rechub.utils.data import DataGenerator, TorchDataset

    torch.set_num_threads(s["threads"])
    torch.manual_seed(s["seed"])
    imports_s = _now() - t_imp

    t0 = _now()  # as torch-rechub's examples/ranking/run_ali_ccp_multi_task.py reads Ali-CCP
    frames = [pd.read_csv(s["files"][k]) for k in ("train", "test")]
    n_train = len(frames[0])
    data = pd.concat(frames, axis=0)
    data["ctcvr_label"] = data["purchase"] * data["click"]
    vocab = {c: int(data[c].max()) + 1 for c in SPARSE}
    dim = s["embed_dim"]
    if s["model"] == "esmm":
        label_cols = ["purchase", "click", "ctcvr_label"]  # cvr, ctr, ctcvr: ESMM's fixed order
        used = SPARSE
        user = [
            SparseFeature(c, vocab[c], embed_dim=dim) for c in SPARSE if c not in ESMM_ITEM_FIELDS
        ]
        item = [SparseFeature(c, vocab[c], embed_dim=dim) for c in ESMM_ITEM_FIELDS]
        tower = {"dims": list(s["hidden"])}
        model = ESMM(user, item, cvr_params=tower, ctr_params=dict(tower))
        task_types = ["classification"] * 3
        pick = [1, 2]  # pCTR, pCTCVR
    else:
        label_cols = ["click", "purchase"]  # click first: the transfer runs click -> purchase
        used = SPARSE + DENSE
        feats = [SparseFeature(c, vocab[c], embed_dim=dim) for c in SPARSE]
        feats += [DenseFeature(c) for c in DENSE]
        model = AITM(
            feats,
            2,
            bottom_params={"dims": list(s["hidden"])},
            tower_params_list=[{"dims": []}, {"dims": []}],
        )
        task_types = ["classification"] * 2
        pick = [0, 1]
    x_train = {c: data[c].values[:n_train] for c in used}
    y_train = data[label_cols].values[:n_train]
    x_test = {c: data[c].values[n_train:] for c in used}
    y_test = data[label_cols].values[n_train:]
    train_loader = DataGenerator(x_train, y_train).generate_dataloader(
        x_val=x_test, y_val=y_test, x_test=x_test, y_test=y_test, batch_size=s["batch_size"]
    )[0]
    test_loader = DataLoader(TorchDataset(x_test, y_test), batch_size=s["eval_batch_size"])
    load_s = _now() - t0

    t1 = _now()
    trainer = MTLTrainer(
        model,
        task_types=task_types,
        optimizer_params={"lr": s["lr"], "weight_decay": 0.0},
        n_epoch=s["epochs"],
        device="cpu",
        model_path=str(out),
    )
    for _ in range(s["epochs"]):
        trainer.train_one_epoch(train_loader)
    train_s = _now() - t1

    t2 = _now()
    model.eval()
    preds = []
    with torch.no_grad():
        for x, _ in test_loader:
            preds.append(model(x)[:, pick])
    entire = torch.cat(preds).numpy()
    eval_s = _now() - t2
    np.save(out / "preds.npy", entire.astype(np.float32))
    labels = data[LABELS].values[n_train:].astype(np.int8)
    np.save(out / "labels.npy", labels)
    return {
        "imports_s": imports_s,
        "load_s": load_s,
        "train_s": train_s,
        "eval_s": eval_s,
        "train_rows": n_train,
        "test_rows": len(labels),
        "steps": len(train_loader) * s["epochs"],
        "table_rows": sum(vocab.values()),
        "versions": {
            "torch": torch.__version__,
            "torch_rechub": getattr(torch_rechub, "__version__", "?"),
            "pandas": pd.__version__,
            "threads": torch.get_num_threads(),
        },
    }


def child_main(side: str, settings_path: str) -> None:
    s = json.loads(Path(settings_path).read_text())
    out = Path(settings_path).parent / side
    out.mkdir(exist_ok=True)
    res = (run_project if side == "project" else run_rechub)(s, out)
    res["e2e_s"] = res["load_s"] + res["train_s"] + res["eval_s"]
    (out / "result.json").write_text(json.dumps(res))


# --------------------------------------------------------------------------------- the parent


def auc(scores, labels) -> float:
    """Exact ROC AUC, ties counted half (midranks); the one scorer of both sides."""
    import numpy as np

    labels = np.asarray(labels).astype(bool)
    pos, neg = int(labels.sum()), int((~labels).sum())
    if pos == 0 or neg == 0:
        return float("nan")
    x = np.asarray(scores, np.float64)
    order = np.argsort(x, kind="stable")
    xs = x[order]
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
    ends = np.r_[starts[1:], len(xs)]
    mid = (starts + ends + 1) / 2.0  # 1-based midrank of each tie group
    ranks = np.empty(len(x))
    ranks[order] = np.repeat(mid, ends - starts)
    return float((ranks[labels].sum() - pos * (pos + 1) / 2) / (pos * neg))


def interpreters(args: argparse.Namespace) -> dict[str, str]:
    return {"project": sys.executable, "rechub": args.torch_python}


def run_child(python: str, side: str, settings_path: Path, timeout: float = 3600) -> dict:
    cmd = [python, str(Path(__file__).resolve()), "--child", side, "--settings", str(settings_path)]
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH", "")])),
    )
    t0 = _now()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    wall = _now() - t0
    if p.returncode != 0:
        raise SystemExit(
            f"{side} child failed ({p.returncode}):\n{p.stdout[-2000:]}{p.stderr[-4000:]}"
        )
    res = json.loads((settings_path.parent / side / "result.json").read_text())
    res["process_wall_s"] = wall
    return res


def order(round_index: int, sides: tuple[str, ...]) -> tuple[str, ...]:
    """Which side runs first alternates by round."""
    return sides if round_index % 2 == 0 else tuple(reversed(sides))


def _fmt(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:.2f}"


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    if args.child:
        child_main(args.child, args.settings)
        return {}
    sides = (args.only,) if args.only else SIDES
    if "rechub" in sides and not args.torch_python:
        raise SystemExit("--torch-python: the interpreter with torch and torch-rechub is needed")
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    root = Path(args.workdir or tempfile.mkdtemp(prefix="peer_rechub_"))
    root.mkdir(parents=True, exist_ok=True)
    data_dir = Path(args.data) if args.data else root / "data"
    if not args.data:
        t0 = _now()
        rows = write_split(data_dir, args.train, args.test, args.seed)
        print(f"split: {rows} written to {data_dir} in {_now() - t0:.1f} s", flush=True)
    runs: dict[str, dict[str, list]] = {m: {s: [] for s in sides} for m in models}
    py = interpreters(args)
    for r in range(args.rounds):
        for m in models:
            s = settings(args, m, data_dir)
            s["profile"] = s["profile"] and r == 0  # the first round's project run only
            for side in order(r, sides):
                d = root / "runs" / f"{m}_r{r}"
                d.mkdir(parents=True, exist_ok=True)
                path = d / "settings.json"
                path.write_text(json.dumps(s))
                res = run_child(py[side], side, path)
                preds = __import__("numpy").load(d / side / "preds.npy")
                labels = __import__("numpy").load(d / side / "labels.npy")
                res["auc"] = {
                    "ctr": auc(preds[:, 0], labels[:, 0]),
                    "ctcvr": auc(preds[:, 1], labels[:, 1]),
                }
                res["labels_sha"] = __import__("hashlib").sha256(labels.tobytes()).hexdigest()
                res["examples_per_s"] = res["train_rows"] * s["epochs"] / res["e2e_s"]
                runs[m][side].append(res)
                print(
                    f"round {r} {m:4s} {side:7s} e2e {res['e2e_s']:7.2f} s (load "
                    f"{res['load_s']:.2f}, train {res['train_s']:.2f}, eval {res['eval_s']:.2f};"
                    f" imports {res['imports_s']:.2f}, process {res['process_wall_s']:.2f}) "
                    f"{_fmt(res['examples_per_s'])} ex/s, AUC ctr {res['auc']['ctr']:.4f} "
                    f"ctcvr {res['auc']['ctcvr']:.4f}",
                    flush=True,
                )
            shas = {x[-1]["labels_sha"] for x in runs[m].values()}
            if len(shas) != 1:
                raise SystemExit(f"{m}: the two sides read different test labels")
    summary = summarize(runs, args, models, sides)
    print_summary(summary)
    out = {
        "settings": settings(args, models[0], data_dir) | {"models": models},
        "rows": split_rows(data_dir),
        "runs": runs,
        "summary": summary,
        "machine": {"cores": default_threads(), "uname": " ".join(os.uname())},
    }
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return out


def summarize(runs: dict, args, models, sides) -> dict:
    med = statistics.median
    out = {}
    for m in models:
        row = {}
        for side in sides:
            rs = runs[m][side]
            row[side] = {
                k: med([r[k] for r in rs])
                for k in ("e2e_s", "load_s", "train_s", "eval_s", "imports_s", "examples_per_s")
            }
            row[side]["e2e_runs_s"] = [r["e2e_s"] for r in rs]
            row[side]["auc_ctr"] = [r["auc"]["ctr"] for r in rs]
            row[side]["auc_ctcvr"] = [r["auc"]["ctcvr"] for r in rs]
        if len(sides) == 2:
            ratios = [
                b["e2e_s"] / a["e2e_s"]
                for a, b in zip(runs[m]["project"], runs[m]["rechub"], strict=True)
            ]
            row["ratio_median_e2e"] = row["rechub"]["e2e_s"] / row["project"]["e2e_s"]
            row["ratio_per_round"] = ratios
            row["ratio_train_only"] = row["rechub"]["train_s"] / row["project"]["train_s"]
        out[m] = row
    return out


def print_summary(summary: dict) -> None:
    print("\nmodel  side      e2e s (median)  load    train   eval    ex/s e2e   rounds e2e s")
    for m, row in summary.items():
        for side in SIDES:
            if side not in row:
                continue
            x = row[side]
            runs = " / ".join(f"{v:.1f}" for v in x["e2e_runs_s"])
            print(
                f"{m:6s} {side:8s} {x['e2e_s']:10.2f}  {x['load_s']:7.2f} {x['train_s']:7.2f}"
                f" {x['eval_s']:7.2f} {x['examples_per_s']:10,.0f}   {runs}"
            )
        if "ratio_median_e2e" in row:
            per = ", ".join(f"{v:.2f}" for v in row["ratio_per_round"])
            print(
                f"{m:6s} ratio (rechub / project e2e): {row['ratio_median_e2e']:.2f}x "
                f"(per round {per}); train only {row['ratio_train_only']:.2f}x"
            )


if __name__ == "__main__":
    main()
