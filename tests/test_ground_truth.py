"""experiments/ground_truth.py: a world-seed stopped midway resumes from its checkpoints and
writes the record an unbroken run writes."""

from __future__ import annotations

import pytest

from autoheri_jax.config import load_config
from autoheri_jax.study import Study
from autoheri_jax.train import loop
from tests.helpers import StopTraining, load_script, stop_at

TINY_WORLD = [
    "data.num_users=100", "data.num_items=150", "data.num_train=1600", "data.num_valid=400",
    "data.num_test=800", "data.click_rate=0.3", "data.stage_rates=[0.2]", "model.hidden=[8,4]",
    "model.embed_dim=4", "retrain.batch_size=200", "retrain.log_every=2",
    "checkpoint.every_steps=2", "checkpoint.keep=10",
]  # fmt: skip


def test_a_stopped_world_seed_resumes_to_the_unbroken_record(repo, tmp_path, monkeypatch):
    gt = load_script(repo / "experiments" / "ground_truth.py")
    base = load_config(repo / "experiments" / "configs" / "study_base.py", TINY_WORLD)
    study = Study(name="gt", base=base, arms={"transfer": []}, seed_modes=("data",))
    whole = gt.world_seed(study, "transfer", 0, False, checkpoints=tmp_path / "whole")

    real = gt.train_architectures

    def crashing(spec, cfg, data, masks, *, desc, progress, resumable):
        hooks = [stop_at(6)] + [None] * (len(masks) - 1)
        return loop.train(spec, cfg, data, desc=desc, progress=progress, masks=masks,
                          on_log=hooks, resumable=resumable)  # fmt: skip

    monkeypatch.setattr(gt, "train_architectures", crashing)
    with pytest.raises(StopTraining):
        gt.world_seed(study, "transfer", 0, False, checkpoints=tmp_path / "broken")
    assert any((tmp_path / "broken").iterdir())
    monkeypatch.setattr(gt, "train_architectures", real)
    again = gt.world_seed(study, "transfer", 0, False, checkpoints=tmp_path / "broken")

    assert again["train"]["resumed_at"] == 4 and not whole["train"].get("resumed_at")
    assert again["names"] == whole["names"] and again["masks"] == whole["masks"]
    assert again["test"] == whole["test"]  # every architecture's test sAUC, bitwise
    assert again["valid"] == whole["valid"]
