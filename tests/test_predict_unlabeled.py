"""`autoheri predict` on feature-only files, and header errors that name the columns.

Scoring needs features only, so a file of any processed format without its label columns is
scored; its rows must score exactly as the same rows of the labelled file (the same export, so
this proves the label-free reader keeps rows, ids and dense values). prepare / training still
refuse such a file, naming it; a header lacking feature columns is refused naming them.
Label-free copies of the shared samples are written to tmp_path, never into the repo.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from autoheri_jax.cli import main
from autoheri_jax.data.errors import DataFormatError
from autoheri_jax.data.formats import convert_processed, detect_format
from tests.test_predict import CASES, SHARED, export_for_store, needs_shared, read_scores

pytestmark = needs_shared
RECHUB_TEST = SHARED / "ali-ccp/torch-rechub/ali_ccp_test_sample.csv"
AX_TEST = SHARED / "aliexpress/torch-rechub/aliexpress_test_sample.csv"
AITM_TRAIN = SHARED / "ali-ccp/paddlerec-aitm/train.csv"
ESMM_TEST = SHARED / "ali-ccp/paddlerec-esmm/test_small.txt"
AITM_TEST = SHARED / "ali-ccp/paddlerec-aitm/test.csv"  # no header line
LABELS = {"click", "purchase", "conversion"}
# the positions of the labels in files without a header: ESMM (after sample_id), AITM (first)
HEADERLESS_LABELS = {"test_small.txt": (1, 2), "test.csv": (0, 1)}


def rewrite(src: Path, dst: Path, drop=(), rename=None) -> Path:
    """src with the columns named in `drop` removed (by position for a headerless file: drop
    holds ints) and header names renamed by `rename`; every line split on ','."""
    lines = src.read_text().splitlines()
    head = lines[0].split(",")
    idx = {d if isinstance(d, int) else head.index(d) for d in drop}
    out = [",".join(t for k, t in enumerate(line.split(",")) if k not in idx) for line in lines]
    if rename:
        out[0] = ",".join(rename.get(t, t) for t in out[0].split(","))
    dst.write_text("\n".join(out) + "\n")
    return dst


def label_free(src: Path, dst: Path) -> Path:
    head = src.read_text().split("\n", 1)[0].split(",")
    drop = HEADERLESS_LABELS.get(src.name) if not LABELS & set(head) else LABELS & set(head)
    return rewrite(src, dst, drop)


def predict(export: Path, data: Path, out: Path, fmt: str = "auto", bad: str = "strict") -> int:
    return main(
        [
            "predict",
            "--model",
            str(export),
            "--data",
            str(data),
            "--format",
            fmt,
            "--on-bad-row",
            bad,
            "--out",
            str(out),
            "--no-progress",
            "--batch-size",
            "16",
        ]
    )


@pytest.fixture(scope="module")
def rechub_export(tmp_path_factory) -> Path:
    """An untrained export for the torch-rechub Ali-CCP store (columns are what is tested)."""
    root = tmp_path_factory.mktemp("rechub")
    convert_processed(SHARED / "ali-ccp/torch-rechub", root / "store", progress=False)
    export_for_store(root / "store", root / "export")
    return root / "export"


LABEL_FREE_CASES = [*CASES, ("ali-ccp/paddlerec-aitm", "train.csv", "auto", "skip", "h.csv")]


@pytest.mark.parametrize(
    ("sample", "scored", "fmt", "bad", "out"),
    LABEL_FREE_CASES,
    ids=[f"{c[0]}/{c[1]}" for c in LABEL_FREE_CASES],
)
def test_label_free_file_scores_as_the_labelled_one(tmp_path, sample, scored, fmt, bad, out):
    store = tmp_path / "store"
    convert_processed(SHARED / sample, store, fmt=fmt, min_count=1, on_bad_row=bad, progress=False)
    export_for_store(store, tmp_path / "export")
    src = SHARED / sample / scored
    assert predict(tmp_path / "export", src, tmp_path / f"with_{out}", fmt, bad) == 0
    bare = label_free(src, tmp_path / f"bare_{scored}")
    assert predict(tmp_path / "export", bare, tmp_path / f"bare_{out}", fmt, bad) == 0
    want, got = read_scores(tmp_path / f"with_{out}"), read_scores(tmp_path / f"bare_{out}")
    assert list(got) == list(want) == ["pctr", "pcvr", "pctcvr"]
    # PaddleRec AITM rows with purchase=1, click=0 are skipped as bad when labelled; without
    # labels nothing is wrong with them: compare the rows both kept
    lines = [ln.split(",") for ln in src.read_text().splitlines() if ln.strip()]
    rows = lines if lines[0][0].isdigit() else lines[1:]  # ESMM, AITM test.csv: no header
    keep = np.array([not (r[0] == "0" and r[1] == "1") for r in rows]) if bad == "skip" else None
    assert len(got["pctr"]) == len(rows)
    for k in got:
        np.testing.assert_array_equal(got[k] if keep is None else got[k][keep], want[k])


def test_a_missing_id_or_dense_column_is_named(tmp_path, rechub_export, capsys):
    no_id = rewrite(RECHUB_TEST, tmp_path / "no_id.csv", ["click", "purchase", "205"])
    assert predict(rechub_export, no_id, tmp_path / "s.csv") == 2
    err = capsys.readouterr().err
    assert f"{no_id}: unexpected header: nearest format rechub_aliccp" in err
    assert "lacks columns ['205']" in err and "unknown format" not in err
    assert not (tmp_path / "s.csv").exists()
    dense = ["D508", "D509", "D702", "D853"]
    no_dense = rewrite(RECHUB_TEST, tmp_path / "no_dense.csv", dense)  # labels kept
    with pytest.raises(DataFormatError, match=r"rechub_aliccp.*lacks columns \['D508'") as info:
        detect_format(no_dense)
    assert info.value.file == str(no_dense) and str(dense) in str(info.value)
    no_cat = rewrite(AX_TEST, tmp_path / "no_cat.csv", ["click", "conversion", "categorical_3"])
    with pytest.raises(DataFormatError, match=r"aliexpress.*lacks columns \['categorical_3'\]"):
        detect_format(no_cat)
    # only one of the two labels: not a label-free file, the other label is named
    half = rewrite(AITM_TRAIN, tmp_path / "half.csv", ["purchase"])
    with pytest.raises(DataFormatError, match=r"paddle_aitm.*lacks columns \['purchase'\]"):
        detect_format(half)


def test_format_flag_names_missing_and_unexpected_columns(tmp_path, rechub_export, capsys):
    renamed = rewrite(RECHUB_TEST, tmp_path / "renamed.csv", rename={"205": "x205"})
    out = tmp_path / "s.csv"
    assert predict(rechub_export, renamed, out, fmt="rechub_aliccp") == 2
    err = capsys.readouterr().err
    assert f"{renamed}:1: unexpected header: expected the rechub_aliccp header" in err
    assert "lacks columns ['205'] and has unexpected columns ['x205']" in err
    # AITM's header is optional: a header missing a column is still a header, never a data row
    no_301 = rewrite(AITM_TRAIN, tmp_path / "no_301.csv", ["click", "purchase", "301"])
    for engine in ("arrow", "python"):
        with pytest.raises(DataFormatError, match=r"lacks columns \['301'\]") as info:
            convert_processed(
                no_301,
                tmp_path / "s",
                fmt="paddle_aitm",
                engine=engine,
                labels="optional",
                progress=False,
            )
        assert info.value.line == 1 and info.value.reason == "unexpected header"


@pytest.mark.parametrize(
    "src",
    [RECHUB_TEST, AX_TEST, AITM_TRAIN, ESMM_TEST, AITM_TEST],
    ids=["rechub", "aliexpress", "aitm", "esmm", "aitm-headerless"],
)
def test_prepare_refuses_a_label_free_file(tmp_path, src):
    bare = label_free(src, tmp_path / f"train_{src.name}")
    with pytest.raises(DataFormatError, match="no label columns") as info:
        convert_processed(bare, tmp_path / "store", on_bad_row="skip", progress=False)
    assert info.value.file == str(bare)
    assert not (tmp_path / "store").exists()  # refused before anything is written


def test_prepare_and_run_name_the_label_free_file(tmp_path, repo, capsys, monkeypatch):
    d = tmp_path / "data"
    d.mkdir()
    rewrite(SHARED / "ali-ccp/torch-rechub/ali_ccp_train_sample.csv", d / "train.csv")
    bare = label_free(RECHUB_TEST, d / "test.csv")  # labelled train, label-free test
    assert main(["prepare", "--data", str(d), "--out", str(tmp_path / "store")]) == 2
    err = capsys.readouterr().err
    assert f"{bare}: no label columns" in err and "['click', 'purchase']" in err
    monkeypatch.chdir(repo)
    args = [
        "run",
        "--config",
        "experiments/configs/samples.py",
        "--workdir",
        str(tmp_path / "wd"),
        "--data",
        str(d),
        "--no-progress",
    ]
    assert main(args) == 2
    assert f"{bare}: no label columns" in capsys.readouterr().err
