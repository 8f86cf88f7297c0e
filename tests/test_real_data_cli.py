"""`autoheri run --data ... --format ...` end to end on every real sample in ../shared/data."""

import json
from pathlib import Path

import pytest

from autoheri_jax.cli import main

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SAMPLES = "experiments/configs/samples.py"
needs_shared = pytest.mark.skipif(
    not SHARED.is_dir(), reason=f"shared sample data not found at {SHARED}"
)

CASES = [
    # (sample dir, --format or None for auto-detection, extra flags, test rows)
    ("ali-ccp/torch-rechub", None, [], 50),
    ("ali-ccp/paddlerec-aitm", "paddle_aitm", ["--on-bad-row", "skip"], None),
    ("ali-ccp/paddlerec-esmm", None, [], 10),
    ("aliexpress/torch-rechub", None, [], 20),
    ("aliexpress/fuxictr-tiny_mtl", "aliexpress", [], 100),
]


@pytest.fixture(autouse=True)
def _in_repo(repo, monkeypatch):
    monkeypatch.chdir(repo)


@pytest.mark.slow
@needs_shared
@pytest.mark.parametrize(("sample", "fmt", "extra", "test_rows"), CASES, ids=[c[0] for c in CASES])
def test_run_trains_on_every_sample_format(tmp_path, sample, fmt, extra, test_rows):
    wd = tmp_path / "run"
    args = [
        "run",
        "--config",
        SAMPLES,
        "--workdir",
        str(wd),
        "--data",
        str(SHARED / sample),
        "--no-progress",
        *extra,
    ]
    if fmt:
        args += ["--format", fmt]
    assert main(args) == 0
    res = json.loads((wd / "results.json").read_text())
    assert res["oracle"] is None  # real data: no true probabilities
    assert set(res["models"]) == {"autoheri", "esmm"}
    if test_rows is not None:
        assert res["data"]["test"]["rows"] == test_rows
    manifest = json.loads((wd / "store" / "manifest.json").read_text())
    assert manifest["splits"]["train"]["rows"] == res["data"]["train"]["rows"]


@pytest.mark.slow
@needs_shared
def test_prepare_then_train_from_the_store(tmp_path, capsys):
    store = tmp_path / "store"
    data = str(SHARED / "ali-ccp/paddlerec-esmm")
    assert main(["prepare", "--data", data, "--out", str(store), "--min-count", "1"]) == 0
    assert "rows" in capsys.readouterr().out
    wd = tmp_path / "run"
    assert (
        main(
            [
                "run",
                "--config",
                SAMPLES,
                "--workdir",
                str(wd),
                "--data",
                str(store),
                "--no-progress",
            ]
        )
        == 0
    )
    assert not (wd / "store").exists()  # a prepared store is used in place
    res = json.loads((wd / "results.json").read_text())
    assert res["data"]["train"]["bag_fields"] > 0  # multi-valued fields kept as bags


def test_bad_data_paths_are_named_without_a_traceback(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    args = ["run", "--config", SAMPLES, "--workdir", str(tmp_path / "w"), "--data", str(missing)]
    assert main(args) == 2
    assert str(missing) in capsys.readouterr().err
    half = tmp_path / "half"
    (half / "train").mkdir(parents=True)
    args = [
        "run",
        "--config",
        SAMPLES,
        "--workdir",
        str(tmp_path / "w2"),
        "--data",
        str(half),
        "--format",
        "store",
    ]
    assert main(args) == 2
    assert "not a finished store" in capsys.readouterr().err
