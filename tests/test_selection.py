"""The masked search's validated selection (search/selection.py): candidates, the tie rule,
the criterion, and a selection run on a tiny funnel compared with its parts."""

import numpy as np
import pytest

from autoheri_jax.config import ConfigError, EdgeSearchConfig, ModelConfig, TrainConfig
from autoheri_jax.metrics import BinaryScores, auc
from autoheri_jax.model.build import build_spec
from autoheri_jax.search import selection
from autoheri_jax.train.arch_batch import architecture_logits, train_architectures
from tests.helpers import tiny_funnel


def test_candidates_are_none_the_evidence_and_all_fewest_edges_first():
    names, masks = selection.candidate_masks(np.array([True, False, True]))
    assert names == ["none", "evidence", "all"]
    np.testing.assert_array_equal(masks, [[0, 0, 0], [1, 0, 1], [1, 1, 1]])
    for kept in (np.zeros(3, bool), np.ones(3, bool)):  # the evidence repeats a candidate
        names, masks = selection.candidate_masks(kept)
        assert names == ["none", "all"] and masks.shape == (2, 3)


def test_a_tie_goes_to_fewer_edges_and_more_edges_must_be_strictly_better():
    assert selection.choose([0.7, 0.7, 0.7], [0, 2, 9]) == 0
    assert selection.choose([0.7, 0.71, 0.71], [0, 2, 9]) == 1
    assert selection.choose([0.7, 0.69, 0.72], [0, 2, 9]) == 2
    assert selection.choose([0.7, float("nan"), 0.69], [0, 2, 9]) == 0  # nan never wins


def test_ctcvr_auc_scores_the_product_of_the_stage_probabilities():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 500, 2))
    click = rng.random(500) < 0.3
    labels = np.stack([click, click & (rng.random(500) < 0.3)], 1).astype(np.float32)
    got = selection.ctcvr_auc(logits, labels)
    for a in range(3):
        p = 1 / (1 + np.exp(-logits[a]))
        assert got[a] == pytest.approx(auc(BinaryScores(p[:, 0] * p[:, 1], labels[:, 1])))


def test_ctcvr_auc_without_a_positive_label_is_a_clear_error():
    logits = np.zeros((2, 5, 2))
    with pytest.raises(ConfigError, match="no positive last-stage label.*select=off"):
        selection.ctcvr_auc(logits, np.zeros((5, 2), np.int8))


def test_select_config_is_validated():
    assert EdgeSearchConfig().select == "ctcvr_auc"
    with pytest.raises(ConfigError, match="select"):
        EdgeSearchConfig(select="auc")


@pytest.mark.slow
def test_selection_scores_each_retrained_candidate_and_keeps_the_chosen_one():
    train_rows, valid = tiny_funnel()
    spec = build_spec(ModelConfig(embed_dim=4, hidden=(8, 6), searched=False),
                      train_rows.vocab_sizes, train_rows.num_dense, 2)  # fmt: skip
    cfg = TrainConfig(epochs=1, batch_size=128, lr=1e-2, log_every=10)
    kept = np.zeros(spec.num_edges, bool)
    kept[0] = True
    out = selection.select_architecture(spec, cfg, train_rows, valid, kept, "ctcvr_auc", 256)
    assert [c["name"] for c in out["candidates"]] == ["none", "evidence", "all"]
    assert [c["edges"] for c in out["candidates"]] == [0, 1, spec.num_edges]
    # the same batch trained and scored by hand gives the same scores
    _, masks = selection.candidate_masks(kept)
    state, _ = train_architectures(spec, cfg, train_rows, masks, desc="by hand")
    logits = architecture_logits(spec, state.params, masks, valid, 256)
    expected = selection.ctcvr_auc(logits, np.asarray(valid.labels))
    assert [c["score"] for c in out["candidates"]] == expected
    best = selection.choose(expected, [0, 1, spec.num_edges])
    assert out["chosen"] == out["candidates"][best]["name"]
    np.testing.assert_array_equal(out["kept"], masks[best].astype(bool))


@pytest.mark.slow
def test_selection_checkpoints_its_batch_and_a_rerun_resumes_it(tmp_path):
    """The candidates' batch is a loop.train run: it leaves checkpoints, a rerun resumes from
    the last one (the same record), and the checkpoint of another evidence set is refused."""
    from autoheri_jax.config import CheckpointConfig
    from autoheri_jax.train.loop import Resumable

    train_rows, valid = tiny_funnel()
    spec = build_spec(ModelConfig(embed_dim=4, hidden=(8, 6), searched=False),
                      train_rows.vocab_sizes, train_rows.num_dense, 2)  # fmt: skip
    cfg = TrainConfig(epochs=1, batch_size=128, lr=1e-2, log_every=10)
    ck = CheckpointConfig(every_steps=10, keep=2, keep_best=False, async_save=False)
    kept = np.zeros(spec.num_edges, bool)
    kept[0] = True

    def run(k):
        fp = selection.selection_fingerprint(spec, cfg, k)
        r = Resumable(tmp_path / "select", ck, {"phase": "search"}, fp)
        return selection.select_architecture(spec, cfg, train_rows, valid, k, "ctcvr_auc", 256, r)

    first = run(kept)
    assert any((tmp_path / "select").iterdir())
    again = run(kept)  # resumed at the final step: nothing left to train, the same scores
    assert again["candidates"] == first["candidates"] and again["chosen"] == first["chosen"]
    other = kept.copy()
    other[1] = True
    with pytest.raises(Exception, match="masks"):
        run(other)
