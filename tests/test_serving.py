"""Export of a trained workdir and the light runtime: equality with `evaluate`, unseen ids,
bag lengths, refusals of a damaged export, a 3-stage funnel, and no training imports.

Tolerance: the exported function runs the same XLA CPU computation as the in-process
predict, so on one machine the scores come out equal (observed bitwise); the tests allow
1e-6 absolute, one float32 rounding step of a probability near 1, because the runtime pads to
another batch size than `evaluate` and XLA may tile a matmul of another shape differently.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from autoheri_jax.config import ModelConfig
from autoheri_jax.model.build import build_spec
from autoheri_jax.model.network import init_params
from autoheri_jax.serving import runtime as rt
from autoheri_jax.serving.export import architecture_of, write_export
from autoheri_jax.train.predict import predict_dataset
from tests.helpers import tiny_funnel, toy_dataset

ATOL = 1e-6
REPO = Path(__file__).resolve().parents[1]


def columns_of(data, raw_of=None) -> dict:
    """A CTRDataset's rows as raw columns (raw_of: field -> raw id of each stored index)."""
    raw_of = raw_of or {}
    cols = {}
    for j, f in enumerate(data.field_names):
        idx = data.sparse[:, j].astype(np.int64)
        cols[f] = raw_of[f][idx] if f in raw_of else idx
    cols |= {d: data.dense[:, j] for j, d in enumerate(data.dense_names)}
    for b in data.bags:
        seqs = [b.row(r)[0].astype(np.int64) for r in range(data.num_rows)]
        cols[b.name] = [raw_of[b.name][s] if b.name in raw_of else s for s in seqs]
    return cols


def export_untrained(out, data, vocabs=None, seed=0, **model_kw):
    """An export of freshly initialised params for `data`'s schema (mapping tests need no
    training): -> (spec, params)."""
    kw = {"embed_dim": 4, "hidden": (8, 4)} | model_kw
    spec = build_spec(
        ModelConfig(**kw), data.vocab_sizes, data.num_dense, data.num_stages, data.bag_vocab_sizes
    )
    params = jax.device_get(init_params(jax.random.key(seed), spec))
    arch = architecture_of(spec, "untrained", None)
    write_export(
        out,
        spec,
        params,
        data,
        vocabs=vocabs,
        max_bag_len=data.max_bag_len,
        info={"model": "untrained"},
        architecture=arch,
    )
    return spec, params


@pytest.fixture
def smoke(smoke_run):
    """The smoke config run end to end, then `autoheri export` of its autoheri model (made once
    per session, conftest.py): (workdir, export)."""
    return smoke_run.workdir, smoke_run.export


def test_exported_supernet_keeps_its_edge_gates(smoke_gradient_run, tmp_path):
    """The gradient search's supernet is gated (arch params): its export must be built as the
    search trained it, gates included, and score as the in-process supernet does."""
    from autoheri_jax import experiment
    from autoheri_jax.artifacts import SEARCHED, Workdir
    from autoheri_jax.exporting import export_workdir
    from autoheri_jax.train.step import abstract_state

    wd = Workdir(smoke_gradient_run.workdir)
    out = export_workdir(wd.root, SEARCHED, tmp_path / "supernet", allow_unfinished=True)
    cfg = experiment.saved_config(wd, None)
    test = experiment.load_data(cfg, None, progress=False).test
    spec, tcfg = experiment.supernet_spec(cfg, test)
    assert spec.searched  # the gradient method trains gates: the spec must carry them
    params = wd.load_params(SEARCHED, abstract_state(spec, tcfg).params, "search")
    cond, _ = predict_dataset(spec, params, test, cfg.eval_batch_size)
    model = rt.load(out)
    assert "unfinished" in model.manifest
    scores = model.score(columns_of(test))
    np.testing.assert_allclose(scores["pcvr"], cond[:, 1], rtol=0, atol=ATOL)


@pytest.mark.slow  # trains a model end to end
def test_export_equals_evaluate_on_the_test_split(smoke):
    from autoheri_jax import experiment
    from autoheri_jax.artifacts import Workdir
    from autoheri_jax.train.step import abstract_state

    wd, out = Workdir(smoke[0]), smoke[1]
    model = rt.load(out)
    cfg = experiment.saved_config(wd, None)
    test = experiment.load_data(cfg, None, progress=False).test
    mcfg = experiment.model_configs(cfg, experiment.read_architecture(wd))["autoheri"]
    spec = experiment.spec_for(mcfg, test)
    params = wd.load_params("autoheri", abstract_state(spec, cfg.retrain).params, "retrain")
    cond, entire = predict_dataset(spec, params, test, cfg.eval_batch_size)
    scores = model.score(columns_of(test))
    assert list(scores) == ["pctr", "pcvr", "pctcvr"]
    np.testing.assert_allclose(scores["pctr"], cond[:, 0], rtol=0, atol=ATOL)
    np.testing.assert_allclose(scores["pcvr"], cond[:, 1], rtol=0, atol=ATOL)
    np.testing.assert_allclose(scores["pctcvr"], entire[:, 1], rtol=0, atol=ATOL)
    manifest = model.manifest
    results = json.loads((smoke[0] / "results.json").read_text())
    assert manifest["metrics"] == results["models"]["autoheri"]["test"]
    assert manifest["config"]["name"] == "smoke" and manifest["model"] == "autoheri"
    assert {"cpu", "cuda"} <= set(manifest["platforms"])
    assert set(manifest["files"]) == {p.name for p in out.iterdir()} - {rt.MANIFEST}
    arch = json.loads((out / rt.ARCHITECTURE).read_text())
    assert arch["search"]["kept"] == results["architecture"]["kept"]


@pytest.mark.slow  # trains a model end to end
def test_unseen_ids_map_to_the_oov_row(smoke):
    """Simulator fields are identity vocabularies: an id outside [0, size) is row 0."""
    model = rt.load(smoke[1])
    size = {f["name"]: f["size"] for f in model.schema["fields"]}
    cols = {f: np.full(4, 1, np.int64) for f in model.fields}
    cols["205"] = np.array([0, size["205"], -7, 10**15])
    s = model.score(cols)
    assert np.all(s["pctr"] == s["pctr"][0]) and np.all(s["pctcvr"] == s["pctcvr"][0])
    cols["205"] = np.array([0, 1, 2, 3])  # in-vocabulary ids do move the score
    assert len(set(model.score(cols)["pctr"].tolist())) > 1


def test_bags_unseen_ids_and_overlong_bags(tmp_path):
    """Table vocabularies (raw id -> index + 1), bag fields: exported scores equal in-process
    ones on mapped rows; an unseen id scores as row 0; a bag longer than max_len scores as its
    first max_len entries (what training's batches kept)."""
    data = toy_dataset(200)  # fields row (200), f (9); bag 150_14 (50); max_bag_len 4
    data = dataclasses.replace(data, dense_names=("d0", "d1"))
    raw_of = {
        f: 1000 + 10 * np.arange(v - 1)
        for f, v in zip([*data.field_names, "150_14"], [*data.vocab_sizes, 50], strict=True)
    }
    spec, params = export_untrained(tmp_path / "e", data, vocabs=raw_of)
    model = rt.load(tmp_path / "e")
    # stored index k is raw id raw_of[k - 1]; index 0 is the OOV row: give it an unseen raw id
    lut = {f: np.concatenate([[7], r]) for f, r in raw_of.items()}
    cols = columns_of(data, lut)
    cond, entire = predict_dataset(spec, params, data, 64)
    s = model.score(cols)
    np.testing.assert_allclose(s["pctr"], cond[:, 0], rtol=0, atol=ATOL)
    np.testing.assert_allclose(s["pctcvr"], entire[:, 1], rtol=0, atol=ATOL)
    one = {k: v[:1] for k, v in cols.items()}  # row 0 (lists and arrays slice alike)
    known = {"f": np.array([lut["f"][1]]), "150_14": [[1010, 1020, 1030, 1040]]}
    score = lambda **over: model.score(one | known | over)["pctr"][0]
    base = score()
    assert score(f=np.array([123456789])) == score(f=np.array([7]))  # unseen == row 0
    assert score(f=np.array([123456789])) != base
    assert score(**{"150_14": [[1010, 1020, 1030, 1040, 1050, 1060]]}) == base  # cut to 4
    csr = {"lengths": np.array([5]), "ids": np.array([1010, 1020, 1030, 1040, 5])}
    assert score(**{"150_14": csr}) == base
    mapped = model.encode(one | {"150_14": [[1010, 99]]})  # 99 is no raw id: row 0, kept
    assert mapped["bag_ids"][0, 0].tolist() == [2, 0, 0, 0]
    assert mapped["bag_mask"][0, 0].tolist() == [1, 1, 0, 0]


def test_three_stage_export(tmp_path):
    _, test = tiny_funnel(3)
    spec, params = export_untrained(tmp_path / "e3", test)
    model = rt.load(tmp_path / "e3")
    assert model.outputs == ["pctr", "patr", "pctatr", "pcvr", "pctcvr"]
    assert model.manifest["stages"] == ["click", "activation", "conversion"]
    cond, entire = predict_dataset(spec, params, test, 256)
    s = model.score(columns_of(test))
    for name, got in (
        ("pctr", cond[:, 0]),
        ("patr", cond[:, 1]),
        ("pctatr", entire[:, 1]),
        ("pcvr", cond[:, 2]),
        ("pctcvr", entire[:, 2]),
    ):
        np.testing.assert_allclose(s[name], got, rtol=0, atol=ATOL)


def _rehash(export: Path, name: str) -> None:
    m = json.loads((export / rt.MANIFEST).read_text())
    m["files"][name]["sha256"] = rt.sha256_file(export / name)
    (export / rt.MANIFEST).write_text(json.dumps(m))


def test_damaged_or_mismatched_exports_are_refused(tmp_path):
    import shutil

    _, test = tiny_funnel(2)
    export_untrained(tmp_path / "a", test)
    _, test3 = tiny_funnel(3)
    export_untrained(tmp_path / "b", test3)

    def broken(how) -> str:
        d = tmp_path / f"case{len(list(tmp_path.iterdir()))}"
        shutil.copytree(tmp_path / "a", d)
        how(d)
        with pytest.raises(rt.ExportError) as e:
            rt.load(d)
        return str(e.value)

    flip = lambda p: p.write_bytes(p.read_bytes()[:-1] + bytes([p.read_bytes()[-1] ^ 1]))
    assert "params.npz: sha256 differs" in broken(lambda d: flip(d / rt.PARAMS))
    assert "schema.json is missing" in broken(lambda d: (d / rt.SCHEMA).unlink())
    assert "manifest.json is missing" in broken(lambda d: (d / rt.MANIFEST).unlink())

    def version(d):
        m = json.loads((d / rt.MANIFEST).read_text())
        (d / rt.MANIFEST).write_text(json.dumps(m | {"schema_version": 99}))

    assert "schema_version 99" in broken(version)

    def other_function(d):  # a 3-stage function beside 2-stage params, hashes made consistent
        shutil.copy(tmp_path / "b" / rt.FUNCTION, d / rt.FUNCTION)
        _rehash(d, rt.FUNCTION)

    assert "different exports" in broken(other_function)

    def other_params(d):
        with np.load(d / rt.PARAMS) as z:
            arrays = dict(z)
        arrays["embedding/table"] = arrays["embedding/table"][:, :2]
        np.savez(d / rt.PARAMS, **arrays)
        _rehash(d, rt.PARAMS)

    assert "parameter 'embedding/table'" in broken(other_params)
    with pytest.raises(rt.ExportError, match="not found"):
        rt.load(tmp_path / "nowhere")

    model = rt.load(tmp_path / "a")
    cols = columns_of(test.take(slice(0, 3)))
    with pytest.raises(rt.ExportError, match=r"missing input columns \['205'\]"):
        model.score({k: v for k, v in cols.items() if k != "205"})
    with pytest.raises(rt.ExportError, match="column '101': float64"):
        model.score(cols | {"101": cols["101"].astype(np.float64)})
    with pytest.raises(rt.ExportError, match="column '205' has 2 rows"):
        model.score(cols | {"205": cols["205"][:2]})


@pytest.mark.slow
def test_fresh_process_loads_without_training_modules(smoke):
    """The documented service path, in a new interpreter: load, score, inspect sys.modules."""
    code = f"""
import sys, json
import numpy as np
from autoheri_jax.serving.runtime import load
model = load({str(smoke[1])!r})
cols = {{f: np.arange(3) for f in model.fields}} | {{d: np.zeros(3) for d in model.dense}}
scores = model.score(cols)
mods = sorted(m for m in sys.modules if m.startswith("autoheri_jax"))
heavy = sorted(m for m in ("flax", "optax", "orbax", "grain", "pyarrow") if m in sys.modules)
print(json.dumps({{"mods": mods, "heavy": heavy, "n": len(scores["pctr"])}}))
"""
    env = os.environ | {"PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=REPO, timeout=300
    )
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    # the runtime and its stdlib-only digest helper; no config, model, train or data module
    assert got["mods"] == [
        "autoheri_jax",
        "autoheri_jax.hashing",
        "autoheri_jax.serving",
        "autoheri_jax.serving.runtime",
    ]
    assert got["heavy"] == [] and got["n"] == 3
