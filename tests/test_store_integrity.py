"""Nothing corrupt is ever used: a prepared store modified after `prepare` (a flipped byte, a
truncated column or manifest, out-of-range values) is refused with one line naming the file;
hashes are checked once per workdir or on --verify; a store's own options are recorded."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from autoheri_jax import experiment
from autoheri_jax.cli import main
from autoheri_jax.config import ConfigError, DataConfig, load_config
from autoheri_jax.data import integrity
from autoheri_jax.data.sources import file_splits, with_store_options
from autoheri_jax.data.store import StoreError, open_split, read_manifest, write_manifest
from tests.test_prepare_aliccp import make_raw, write_raw

SAMPLES = Path(__file__).resolve().parents[1] / "experiments" / "configs" / "samples.py"


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """A raw Ali-CCP-like store (side tables, bags) made by `autoheri prepare --min-count 10`."""
    root = tmp_path_factory.mktemp("prepared")
    raw = write_raw(root / "raw", make_raw()["lines"])
    args = [
        "prepare",
        "--data",
        str(raw),
        "--out",
        str(root / "store"),
        "--min-count",
        "10",
        "--no-progress",
        "--quiet",
    ]
    assert main(args) == 0
    return root / "store"


@pytest.fixture
def store(prepared, tmp_path) -> Path:
    """A private copy of the prepared store, for a test to damage."""
    return Path(shutil.copytree(prepared, tmp_path / "store"))


def run_cli(store: Path, wd: Path, *extra: str) -> int:
    return main(
        [
            "run",
            "--config",
            str(SAMPLES),
            "--workdir",
            str(wd),
            "--data",
            str(store),
            "--no-progress",
            *extra,
        ]
    )


def one_error_line(err: str) -> str:
    """The CLI's error: exactly one line, no traceback."""
    assert "Traceback" not in err
    lines = [x for x in err.splitlines() if "error:" in x]
    assert len(lines) == 1, err
    return lines[0]


def data_offset(path: Path) -> int:
    return integrity.read_header(path, path.parent)[2]


def rewrite_manifest(store: Path) -> None:
    """Re-records the hashes of the store as it is now: what a converter bug would leave."""
    manifest = read_manifest(store)
    manifest.pop("format_version")
    write_manifest(store, manifest)


def test_prepare_records_every_column(prepared):
    columns = read_manifest(prepared)["columns"]
    labels = columns["train/labels.npy"]
    path = prepared / "train" / "labels.npy"
    assert labels["bytes"] == path.stat().st_size
    assert labels["dtype"] == "|i1" and labels["shape"] == list(np.load(path).shape)
    assert labels["sha256"] == integrity.sha256_file(path)
    assert {"side.train/bag.150_14.ids.npy", "train/side.train.row.npy"} <= set(columns)


def test_flipped_byte_in_labels_is_refused_naming_the_file(store, tmp_path, capsys):
    path = store / "train" / "labels.npy"
    data = bytearray(path.read_bytes())
    data[data_offset(path)] ^= 0xFF  # a label of 0 or 1 becomes -1 or -2
    path.write_bytes(bytes(data))
    assert run_cli(store, tmp_path / "run") == 2
    line = one_error_line(capsys.readouterr().err)
    assert f"{path}: sha256 mismatch" in line and "re-run autoheri prepare" in line
    assert not (tmp_path / "run" / "results.json").exists()


@pytest.mark.parametrize("column", ["train/sparse.npy", "side.train/bag.150_14.ids.npy"])
def test_truncated_column_is_refused_naming_the_file(store, tmp_path, capsys, column):
    path = store / column
    os.truncate(path, path.stat().st_size - 3)
    assert run_cli(store, tmp_path / "run") == 2
    line = one_error_line(capsys.readouterr().err)
    assert f"{path}: truncated" in line and "mmap" not in line
    with pytest.raises(StoreError, match=f"{column}: truncated"):  # also without a workdir
        open_split(store, "train")


def test_replaced_column_is_refused_naming_what_differs(store):
    path = store / "train" / "dense.npy"
    np.save(path, np.zeros((read_manifest(store)["splits"]["train"]["rows"], 1), np.float32))
    with pytest.raises(StoreError, match=r"train/dense\.npy: bytes \d+, manifest.json says"):
        open_split(store, "train")


@pytest.mark.parametrize(
    ("damage", "what"),
    [(lambda text: text[: len(text) // 2], "truncated"), (lambda text: "{]", "not valid JSON")],
)
def test_damaged_manifest_is_refused_naming_the_file(store, tmp_path, capsys, damage, what):
    path = store / "manifest.json"
    path.write_text(damage(path.read_text()))
    assert run_cli(store, tmp_path / "run") == 2
    line = one_error_line(capsys.readouterr().err)
    assert f"{path}: {what}" in line and f"delete {store} and re-run autoheri prepare" in line
    with pytest.raises(StoreError, match=f"manifest.json: {what}"):
        read_manifest(store)


@pytest.fixture
def hash_calls(monkeypatch) -> list[Path]:
    calls = []
    real = integrity.sha256_file

    def counting(path):
        calls.append(Path(path))
        return real(path)

    monkeypatch.setattr(integrity, "sha256_file", counting)
    return calls


def test_hashes_are_checked_once_per_workdir_and_recorded(store, tmp_path, hash_calls):
    d, wd = DataConfig(source="files", path=str(store)), tmp_path / "wd"
    wd.mkdir()
    manifest = read_manifest(store)
    file_splits(d, wd, progress=False)
    assert len(hash_calls) == len(manifest["columns"])  # every column, once
    record = json.loads((wd / integrity.RECORD).read_text())
    entry = record[integrity.digest(manifest)]
    assert entry["store"] == str(store.resolve()) and entry["columns"] == len(hash_calls)
    hash_calls.clear()
    file_splits(d, wd, progress=False)
    assert hash_calls == []  # recorded: the second open does not hash
    file_splits(d, tmp_path / "other", progress=False)
    assert len(hash_calls) == len(manifest["columns"])  # another workdir hashes it itself


def test_verify_rehashes_a_store_the_workdir_verified(store, tmp_path, hash_calls, capsys):
    d, wd = DataConfig(source="files", path=str(store)), tmp_path / "wd"
    wd.mkdir()
    file_splits(d, wd, progress=False)
    # a change no range check can see: an impression without a click now has one
    path = store / "train" / "labels.npy"
    labels = np.load(path, mmap_mode="r+")
    row = int(np.flatnonzero(labels[:, 0] == 0)[0])
    labels[row, 0] = 1
    labels.flush()
    del labels
    hash_calls.clear()
    file_splits(d, wd, progress=False)  # without --verify the recorded verification stands
    assert hash_calls == []
    with integrity.verifying(), pytest.raises(StoreError, match="labels.npy: sha256 mismatch"):
        file_splits(d, wd, progress=False)
    assert run_cli(store, wd, "--verify") == 2
    assert f"{path}: sha256 mismatch" in one_error_line(capsys.readouterr().err)


def test_verify_hashes_once_per_command(store, tmp_path, hash_calls):
    d = DataConfig(source="files", path=str(store))
    with integrity.verifying():
        for _ in range(3):  # search, retrain and evaluate each load the data
            file_splits(d, tmp_path, progress=False)
    assert len(hash_calls) == len(read_manifest(store)["columns"])


def test_out_of_range_labels_are_refused_naming_file_and_column(store):
    path = store / "train" / "labels.npy"
    labels = np.load(path)
    stages = read_manifest(store)["stage_names"]
    bad = labels.copy()
    bad[3, 1] = -1
    np.save(path, bad)
    rewrite_manifest(store)  # the hashes agree: only the range check can tell
    match = rf"train/labels\.npy: column 1 \({stages[1]}\) has label -1 at row 3"
    with pytest.raises(StoreError, match=match):
        open_split(store, "train")
    bad = labels.copy()
    row = int(np.flatnonzero(labels[:, 0] == 0)[0])
    bad[row, 1] = 1  # converted without a click
    np.save(path, bad)
    rewrite_manifest(store)
    with pytest.raises(StoreError, match=rf"labels\.npy: row {row} has {stages[1]}=1 .*cumulative"):
        open_split(store, "train")


def test_out_of_range_ids_are_refused_naming_file_and_column(store):
    manifest = read_manifest(store)
    field, size = manifest["fields"][2], manifest["vocab_sizes"][manifest["fields"][2]]
    path = store / "train" / "sparse.npy"
    sparse = np.load(path)
    bad = sparse.copy()
    bad[5, 2] = size
    np.save(path, bad)
    rewrite_manifest(store)
    match = rf"train/sparse\.npy: column 2 \(field {field}\) has id {size} at row 5, outside"
    with pytest.raises(StoreError, match=match):
        open_split(store, "train")
    np.save(path, sparse)
    bag = store / "side.train" / "bag.150_14.ids.npy"
    ids = np.load(bag)
    ids[0] = -7
    np.save(bag, ids)
    rewrite_manifest(store)
    with pytest.raises(
        StoreError, match=r"side\.train/bag\.150_14\.ids\.npy: field 150_14 has id -7"
    ):
        open_split(store, "valid")


def test_older_store_without_hashes_opens_with_one_warning(store, capsys):
    path = store / "manifest.json"
    manifest = json.loads(path.read_text())
    del manifest["columns"]
    path.write_text(json.dumps(manifest))
    integrity.verify(store, read_manifest(store), record_dir=store.parent)
    integrity.verify(store, read_manifest(store), record_dir=store.parent)
    err = capsys.readouterr().err
    assert err.count("no column hashes") == 1 and "re-run autoheri prepare" in err
    assert open_split(store, "train").num_rows == manifest["splits"]["train"]["rows"]
    column = store / "train" / "sparse.npy"
    os.truncate(column, column.stat().st_size - 4)  # still caught: the .npy header's size
    with pytest.raises(StoreError, match="sparse.npy: truncated"):
        open_split(store, "train")


def test_store_options_win_and_are_recorded_visibly(store, tmp_path, capsys, monkeypatch):
    cfg = load_config(str(SAMPLES), ["data.source=files", f"data.path={store}"])
    assert cfg.data.min_count == 1
    assert with_store_options(cfg).data.min_count == 10
    err = capsys.readouterr().err
    assert f"data.min_count=1 but {store} was prepared with --min-count 10" in err

    def stop(*args, **kwargs):  # config.json is written: the training itself is not the point
        raise ConfigError("stopped before training")

    monkeypatch.setattr(experiment, "train_and_save", stop)
    wd = tmp_path / "run"
    assert run_cli(store, wd) == 2
    assert json.loads((wd / "config.json").read_text())["data"]["min_count"] == 10
    assert "data.min_count=1 but" in capsys.readouterr().err
