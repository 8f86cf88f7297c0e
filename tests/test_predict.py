"""`autoheri predict` over the shared real samples in every format, raw Ali-CCP and a store.

Each case converts the sample as training would (train-only vocabularies in a store), exports
a freshly initialised model of that store's schema, scores the raw test file with `predict`
and compares with the in-process predictions on the store's test split: equal rows prove the
raw-id mapping (unseen test ids included) without training a model per format.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from autoheri_jax.cli import main
from autoheri_jax.data.aliccp_raw import prepare_aliccp_raw
from autoheri_jax.data.formats import convert_processed
from autoheri_jax.data.store import open_split
from autoheri_jax.data.vocab import load_vocabularies
from autoheri_jax.serving import runtime as rt
from autoheri_jax.serving.predict import predict_file
from autoheri_jax.train.predict import predict_dataset
from tests.test_prepare_aliccp import make_raw, write_raw
from tests.test_serving import ATOL, export_untrained

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_shared = pytest.mark.skipif(
    not SHARED.is_dir(), reason=f"shared sample data not found at {SHARED}"
)

CASES = [
    # (sample dir, file scored, --format, --on-bad-row, output)
    ("ali-ccp/torch-rechub", "ali_ccp_test_sample.csv", "auto", "strict", "p.parquet"),
    ("ali-ccp/paddlerec-aitm", "test.csv", "paddle_aitm", "skip", "p.csv"),
    ("ali-ccp/paddlerec-esmm", "test_small.txt", "auto", "strict", "p.csv"),
    ("aliexpress/torch-rechub", "aliexpress_test_sample.csv", "auto", "strict", "p.csv"),
    ("aliexpress/fuxictr-tiny_mtl", "test.csv", "aliexpress", "strict", "p.parquet"),
]


def read_scores(path: Path) -> dict[str, np.ndarray]:
    table = pq.read_table(path) if path.suffix == ".parquet" else pcsv.read_csv(path)
    return {k: table.column(k).to_numpy() for k in table.column_names}


def export_for_store(store: Path, out: Path, **model_kw):
    """(test split, spec, params) of an untrained model exported for the store's schema."""
    test = open_split(store, "test")
    vocabs = load_vocabularies(store, [*test.field_names, *(b.name for b in test.bags)])
    spec, params = export_untrained(out, test, vocabs=vocabs, **model_kw)
    return test, spec, params


def assert_same_scores(got: dict, spec, params, test) -> None:
    cond, entire = predict_dataset(spec, params, test, 64)
    assert len(got["pctr"]) == test.num_rows
    np.testing.assert_allclose(got["pctr"], cond[:, 0], rtol=0, atol=ATOL)
    np.testing.assert_allclose(got["pcvr"], cond[:, 1], rtol=0, atol=ATOL)
    np.testing.assert_allclose(got["pctcvr"], entire[:, 1], rtol=0, atol=ATOL)


@pytest.mark.slow
@needs_shared
@pytest.mark.parametrize(
    ("sample", "scored", "fmt", "bad", "out"), CASES, ids=[c[0] for c in CASES]
)
def test_predict_every_sample_format(tmp_path, sample, scored, fmt, bad, out):
    store = tmp_path / "store"
    convert_processed(SHARED / sample, store, fmt=fmt, min_count=1, on_bad_row=bad, progress=False)
    test, spec, params = export_for_store(store, tmp_path / "export")
    args = [
        "predict",
        "--model",
        str(tmp_path / "export"),
        "--data",
        str(SHARED / sample / scored),
        "--format",
        fmt,
        "--on-bad-row",
        bad,
        "--out",
        str(tmp_path / out),
        "--no-progress",
        "--batch-size",
        "16",
    ]
    assert main(args) == 0
    got = read_scores(tmp_path / out)
    assert list(got) == ["pctr", "pcvr", "pctcvr"]
    assert_same_scores(got, spec, params, test)


@needs_shared
def test_predict_a_store_split_and_strict_bad_rows(tmp_path, capsys):
    sample = SHARED / "ali-ccp/paddlerec-aitm"
    store = tmp_path / "store"
    convert_processed(sample, store, fmt="paddle_aitm", on_bad_row="skip", progress=False)
    test, spec, params = export_for_store(store, tmp_path / "export")
    model = rt.load(tmp_path / "export")
    summary = predict_file(model, store, tmp_path / "s.csv", split="test", progress=False)
    assert summary["format"] == "paddle_aitm"
    assert_same_scores(read_scores(tmp_path / "s.csv"), spec, params, test)
    strict = tmp_path / "strict.csv"
    args = [
        "predict",
        "--model",
        str(tmp_path / "export"),
        "--data",
        str(sample / "test.csv"),
        "--format",
        "paddle_aitm",
        "--out",
        str(strict),
        "--no-progress",
    ]
    assert main(args) == 2
    assert ":7: conversion without click" in capsys.readouterr().err  # FILE:LINE: as prepare
    assert not strict.exists()


@needs_shared
def test_predict_refuses_data_without_the_models_columns(tmp_path, capsys):
    store = tmp_path / "store"
    convert_processed(SHARED / "ali-ccp/torch-rechub", store, progress=False)
    export_for_store(store, tmp_path / "export")
    aitm = SHARED / "ali-ccp/paddlerec-aitm/train.csv"  # 18 of rechub's 23 fields, no dense
    args = [
        "predict",
        "--model",
        str(tmp_path / "export"),
        "--data",
        str(aitm),
        "--on-bad-row",
        "skip",
        "--out",
        str(tmp_path / "x.csv"),
        "--no-progress",
    ]
    assert main(args) == 2
    assert "lacks 13 column(s) the model reads: ['210', '109_14'" in capsys.readouterr().err
    args[-2] = str(tmp_path / "x.txt")
    assert main(args) == 2
    assert "extension picks the format" in capsys.readouterr().err


@pytest.mark.slow
def test_predict_raw_aliccp_directory(tmp_path):
    """Raw Ali-CCP (user bags in side tables, test-only item ids): the test pair is scored."""
    raw = write_raw(tmp_path / "raw", make_raw(n_train=120, n_test=60, n_users=8)["lines"])
    store = tmp_path / "store"
    prepare_aliccp_raw(raw, store, min_count=1, valid_fraction=0.0, progress=False)
    test, spec, params = export_for_store(store, tmp_path / "export", bag_pooling="sum")
    model = rt.load(tmp_path / "export")
    assert model.bag_fields  # 210, 853 per row; 109_14 ... 150_14 through the side table
    predict_file(model, raw, tmp_path / "r.csv", progress=False, batch_size=25)
    assert_same_scores(read_scores(tmp_path / "r.csv"), spec, params, test)
