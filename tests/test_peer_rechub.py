"""benchmarks/peer_rechub.py without torch: its options, the split it writes, and that both sides
get one and the same settings (rows, batch, epochs, model sizes). The torch side runs only
where torch and torch-rechub are importable (benchmarks/requirements-peer.txt)."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from autoheri_jax.config import DataConfig
from autoheri_jax.data.sources import load_splits

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def peer():
    had_torch = "torch" in sys.modules
    spec = importlib.util.spec_from_file_location("peer_rechub", REPO / "benchmarks/peer_rechub.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert had_torch or "torch" not in sys.modules, "importing the script must not import torch"
    return mod


@pytest.fixture(scope="module")
def split(peer, tmp_path_factory):
    d = tmp_path_factory.mktemp("peer_split")
    rows = peer.write_split(d, 600, 200, seed=3)
    return d, rows


def test_split_is_a_rechub_csv_dir_the_project_reads_row_for_row(peer, split, tmp_path):
    d, rows = split
    assert rows == {"train": 600, "test": 200} and peer.split_rows(d) == rows
    assert (d / "train.csv").read_text().splitlines()[0] == ",".join(peer.HEADER)
    # the project side reads the same rows in the same order as a plain CSV read (pandas, on
    # the torch side, reads the file the same way), with no validation carved from train
    cfg = DataConfig(source="files", path=str(d), format="rechub_aliccp", valid_fraction=0.0)
    s = load_splits(cfg, tmp_path, progress=False)
    assert (s.train.num_rows, s.test.num_rows, s.valid.num_rows) == (600, 200, 0)
    for part, name in ((s.train, "train.csv"), (s.test, "test.csv")):
        csv = np.loadtxt(d / name, delimiter=",", skiprows=1)
        np.testing.assert_array_equal(np.asarray(part.labels)[:, :2], csv[:, :2])
        np.testing.assert_allclose(part.dense, csv[:, -len(peer.DENSE) :], atol=1e-6)
    assert 0 < np.asarray(s.train.labels)[:, 0].mean() < 0.5  # clicks present, not all


def test_both_sides_get_one_settings_dict(peer, split):
    d, _ = split
    argv = ["--batch-size", "128", "--epochs", "2", "--hidden", "32,16", "--embed-dim", "8"]
    args = peer.build_parser().parse_args([*argv, "--threads", "2", "--lr", "0.01"])
    for model in peer.MODELS:
        s = peer.settings(args, model, d)
        assert s["model"] == model and s["batch_size"] == 128 and s["epochs"] == 2
        assert s["hidden"] == [32, 16] and s["embed_dim"] == 8 and s["threads"] == 2
        assert s["lr"] == 0.01 and s["eval_batch_size"] == 8192
        assert s["files"] == {"train": str(d / "train.csv"), "test": str(d / "test.csv")}
    # default threads: the cores this process may use (what XLA's CPU client takes)
    assert peer.settings(peer.build_parser().parse_args([]), "esmm", d)["threads"] >= 1
    # both children of a run read the same file: the settings hold no side-specific key
    assert not any(k in peer.settings(args, "aitm", d) for k in ("side", "child"))
    assert peer.order(0, peer.SIDES) == ("project", "rechub")
    assert peer.order(1, peer.SIDES) == ("rechub", "project")


def test_bad_options_refused(peer, split, tmp_path):
    d, _ = split
    ap = peer.build_parser()
    with pytest.raises(SystemExit, match="missing"):
        peer.settings(ap.parse_args([]), "esmm", tmp_path)
    with pytest.raises(SystemExit, match="not one of"):
        peer.settings(ap.parse_args([]), "mmoe", d)
    with pytest.raises(SystemExit, match="positive"):
        peer.settings(ap.parse_args(["--hidden", "0"]), "esmm", d)


def test_auc_is_exact_with_ties(peer):
    assert peer.auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == 0.75
    assert peer.auc([0.5, 0.5], [0, 1]) == 0.5
    assert np.isnan(peer.auc([0.1, 0.2], [0, 0]))


def test_rechub_side_runs_on_the_split(peer, split, tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("torch_rechub")
    d, _ = split
    args = peer.build_parser().parse_args(["--batch-size", "128", "--hidden", "16,8"])
    for model in peer.MODELS:
        out = tmp_path / model
        out.mkdir()
        res = peer.run_rechub(peer.settings(args, model, d), out)
        assert res["train_rows"] == 600 and res["test_rows"] == 200 and res["steps"] == 5
        assert np.load(out / "preds.npy").shape == (200, 2)
