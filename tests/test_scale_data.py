"""benchmarks/scale_data.py: a raw-Ali-CCP-shaped directory written in blocks, exact in its row
counts, with true probabilities that the labels follow and `autoheri prepare` can read."""

import json

import numpy as np

from tests.helpers import load_script


def _module(repo):
    return load_script(repo / "benchmarks" / "scale_data.py")


def test_generated_rows_truth_and_labels_agree(repo, tmp_path, monkeypatch):
    mod = _module(repo)
    monkeypatch.setattr(mod, "BLOCK_COMMON_ROWS", 50)  # many blocks: the block seams are tested
    info = mod.generate(tmp_path, 60_001, seed=3)
    for split in ("train", "test"):
        rows = info["splits"][split]["rows"]
        skeleton = (tmp_path / f"sample_skeleton_{split}.csv").read_text().splitlines()
        truth = np.fromfile(tmp_path / f"truth_{split}.f32", np.float32).reshape(-1, 2)
        assert len(skeleton) == len(truth) == rows
        labels = np.array([[int(x) for x in line.split(",", 3)[1:3]] for line in skeleton])
        assert labels[:, 0].sum() == info["splits"][split]["clicks"]
        assert (labels[:, 1] <= labels[:, 0]).all()  # a conversion only after a click
        # the labels follow the truth: the mean click probability predicts the click count
        p = truth[:, 0].astype(np.float64)
        assert abs(labels[:, 0].sum() - p.sum()) < 4 * np.sqrt((p * (1 - p)).sum())
        keys = {
            line.split(",", 1)[0]
            for line in (tmp_path / f"common_features_{split}.csv").read_text().splitlines()
        }
        assert {line.split(",", 4)[3] for line in skeleton} <= keys  # every join key exists
    assert info["splits"]["train"]["rows"] + info["splits"]["test"]["rows"] == 60_001
    assert json.loads((tmp_path / "world.json").read_text())["rows"] == 60_001
    assert 0.03 < info["splits"]["train"]["clicks"] / info["splits"]["train"]["rows"] < 0.05


def test_prepare_reads_it_and_keeps_the_test_rows_in_order(repo, tmp_path):
    """The truth file of the test split lines up with the store's test rows (scoreable)."""
    from pathlib import Path

    from autoheri_jax.config import DataConfig
    from autoheri_jax.data.aliccp_raw import prepare_aliccp_raw
    from autoheri_jax.data.sources import load_splits

    _module(repo).generate(tmp_path / "raw", 40_000, seed=1)
    prepare_aliccp_raw(tmp_path / "raw", tmp_path / "store", min_count=2)
    data = load_splits(
        DataConfig(source="files", path=str(tmp_path / "store")), Path(tmp_path), False
    )
    skeleton = (tmp_path / "raw" / "sample_skeleton_test.csv").read_text().splitlines()
    clicks = np.array([int(line.split(",", 2)[1]) for line in skeleton])
    np.testing.assert_array_equal(np.asarray(data.test.labels)[:, 0], clicks)
