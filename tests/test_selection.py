"""The masked search's validated selection (search/selection.py): candidates, the tie rule,
the criterion, and a selection run on a tiny funnel compared with its parts."""

import numpy as np
import pytest
from scipy import stats

from autoheri_jax.config import (
    AblationSearch,
    ConfigError,
    MaskedSearch,
    ModelConfig,
    TrainConfig,
)
from autoheri_jax.metrics import BinaryScores, auc
from autoheri_jax.model.build import build_spec
from autoheri_jax.search import selection
from tests.helpers import tiny_funnel


def test_candidates_are_none_the_evidence_and_all_fewest_edges_first():
    names, masks = selection.candidate_masks(np.array([True, False, True]))
    assert names == ["none", "evidence", "all"]
    np.testing.assert_array_equal(masks, [[0, 0, 0], [1, 0, 1], [1, 1, 1]])
    for kept in (np.zeros(3, bool), np.ones(3, bool)):  # the evidence repeats a candidate
        names, masks = selection.candidate_masks(kept)
        assert names == ["none", "all"] and masks.shape == (2, 3)


def _p_table(table):
    return lambda a, b: table[a, b]


def test_equal_candidates_keep_the_fewest_edges():
    best, comps = selection.choose([0.7, 0.7, 0.7], [0, 2, 9], lambda a, b: 0.5)
    assert best == 0 and [c["wins"] for c in comps] == [False, False]


def test_a_better_score_inside_the_noise_keeps_fewer_edges():
    # "all" scores higher, but its paired p-value does not clear 0.05 / 2
    p = _p_table({(1, 0): 0.4, (2, 0): 0.03})
    best, comps = selection.choose([0.70, 0.69, 0.72], [0, 2, 9], p)
    assert best == 0 and comps[-1] == {
        "candidate": 2,
        "against": 0,
        "p": 0.03,
        "level": 0.025,
        "wins": False,
    }
    p = _p_table({(1, 0): 0.4, (2, 0): 0.01})
    assert selection.choose([0.70, 0.69, 0.72], [0, 2, 9], p)[0] == 2  # clears the margin
    # a small p for a lower score never wins (the test is one-sided in the score's favour)
    assert selection.choose([0.70, 0.69], [0, 9], lambda a, b: 0.001)[0] == 0


def test_a_nan_score_never_wins_wherever_it_stands():
    tiny = lambda a, b: 1e-9
    assert selection.choose([float("nan"), 0.7, 0.8], [0, 2, 9], tiny)[0] == 2
    assert selection.choose([0.7, float("nan"), 0.69], [0, 2, 9], tiny)[0] == 0
    assert selection.choose([0.7, 0.8, float("nan")], [0, 2, 9], tiny)[0] == 1
    with pytest.raises(ValueError, match="no candidate has a finite score"):
        selection.choose([float("nan")] * 2, [0, 9], tiny)


def test_of_several_candidates_with_one_edge_count_the_best_is_compared():
    seen = []

    def p(a, b):
        seen.append((a, b))
        return 1e-6

    best, _ = selection.choose([0.60, 0.61, 0.65, 0.62], [0, 1, 1, 1], p)
    assert best == 2 and seen == [(2, 0)]  # level 0.05 / 3: every candidate counts


def test_delong_difference_is_the_exact_auc_difference_and_its_p_is_calibrated():
    rng = np.random.default_rng(0)
    y = (rng.random(20_000) < 0.05).astype(float)
    a = 0.5 * y + rng.normal(size=y.size)
    b = a + 0.5 * rng.normal(size=y.size)  # a noisier copy: a truly ranks better
    t = selection.delong_paired(a, b, y)
    exact = auc(BinaryScores(a, y)) - auc(BinaryScores(b, y))
    assert t["diff"] == pytest.approx(exact, abs=1e-12)
    assert t["p"] < 1e-3 and selection.delong_paired(b, a, y)["p"] > 0.999
    # two equally good scores: the one-sided test rejects at about its level
    ps = []
    for _ in range(200):
        y = (rng.random(3000) < 0.05).astype(float)
        base = 0.5 * y + rng.normal(size=y.size)
        ps.append(
            selection.delong_paired(
                base + rng.normal(size=y.size), base + rng.normal(size=y.size), y
            )["p"]
        )
    assert 0.01 <= np.mean(np.asarray(ps) < 0.05) <= 0.11


def _random_funnel(rng, archs: int, rows: int):
    """(logits [archs, rows, 2], click [rows] bool, labels [rows, 2]): 30% click, 30% of the
    clicks convert, scores unrelated to either."""
    logits = rng.normal(size=(archs, rows, 2))
    click = rng.random(rows) < 0.3
    labels = np.stack([click, click & (rng.random(rows) < 0.3)], 1).astype(np.float32)
    return logits, click, labels


def test_ctcvr_auc_scores_the_product_of_the_stage_probabilities():
    logits, _, labels = _random_funnel(np.random.default_rng(0), 3, 500)
    got = selection.ctcvr_auc(logits, labels)
    for a in range(3):
        p = 1 / (1 + np.exp(-logits[a]))
        assert got[a] == pytest.approx(auc(BinaryScores(p[:, 0] * p[:, 1], labels[:, 1])))


def test_ctcvr_auc_without_a_positive_label_is_a_clear_error():
    logits = np.zeros((2, 5, 2))
    with pytest.raises(ConfigError, match="no positive last-stage label.*select=off"):
        selection.ctcvr_auc(logits, np.zeros((5, 2), np.int8))


def test_cvr_auc_ranks_the_last_stage_on_the_clicked_rows_only():
    rng = np.random.default_rng(1)
    logits, click, labels = _random_funnel(rng, 2, 800)
    got = selection.cvr_auc(logits, labels)
    for a in range(2):
        want = auc(BinaryScores(logits[a, click, 1], labels[click, 1]))
        assert got[a] == pytest.approx(want)
    moved = logits.copy()
    moved[:, ~click, :] = rng.normal(size=moved[:, ~click, :].shape) * 10  # unclicked rows
    moved[:, :, 0] = rng.normal(size=moved[:, :, 0].shape)  # and every click logit
    assert selection.cvr_auc(moved, labels) == got


def test_cvr_auc_sees_a_post_click_gain_that_the_click_ranking_hides():
    """Two candidates with the same, strong click scores; only 'all' ranks conversions among
    clicks. cvr_auc takes it beyond the margin; ctcvr_auc, dominated by the click ranking,
    sees a far smaller difference."""
    rng = np.random.default_rng(3)
    n = 40_000
    click_logit = rng.normal(size=n) * 2.0 - 3.0
    click = rng.random(n) < 1 / (1 + np.exp(-click_logit))
    signal = rng.normal(size=n)
    conv = click & (rng.random(n) < 1 / (1 + np.exp(-(signal - 1.5))))
    labels = np.stack([click, conv], 1).astype(np.float32)
    none = np.stack([click_logit, rng.normal(size=n) - 1.5], 1)
    full = np.stack([click_logit, 0.5 * signal + rng.normal(size=n) - 1.5], 1)
    logits, masks = np.stack([none, full]), np.array([[0, 0], [1, 1]], np.float32)
    by_cvr, kept = selection.judge(["none", "all"], masks, logits, labels, "cvr_auc")
    by_ctcvr, _ = selection.judge(["none", "all"], masks, logits, labels, "ctcvr_auc")
    assert by_cvr.chosen == "all" and kept.all()
    assert by_cvr.positives == int(conv.sum())
    gain = {r.criterion: r.comparisons[0].diff for r in (by_cvr, by_ctcvr)}
    assert gain["cvr_auc"] > 2 * gain["ctcvr_auc"] > 0


def test_cvr_auc_needs_two_stages_and_a_converting_click():
    with pytest.raises(ConfigError, match="two or more stages"):
        selection.cvr_auc(np.zeros((2, 5, 1)), np.ones((5, 1), np.float32))
    labels = np.array([[1, 0], [1, 0], [0, 0]], np.float32)  # clicks, no conversion
    with pytest.raises(ConfigError, match="2 validation rows with a positive previous stage"):
        selection.cvr_auc(np.zeros((2, 3, 2)), labels)


def test_select_config_is_validated():
    assert MaskedSearch().select == "ctcvr_auc"
    with pytest.raises(ConfigError, match="select"):
        MaskedSearch(select="auc")
    assert MaskedSearch(select="cvr_auc").select == AblationSearch(select="cvr_auc").select
    with pytest.raises(ConfigError, match="select"):
        AblationSearch(select="off")  # the ablation batch is its own decision: it must judge


def test_the_detectable_difference_is_seen_at_its_stated_power():
    """A true difference equal to `detectable_difference` clears the margin in about 80% of
    validation draws; half of it in far fewer."""
    rng = np.random.default_rng(2)
    level, shift = 0.025, {}
    for frac in (1.0, 0.5):
        wins = []
        for _ in range(120):
            y = (rng.random(4000) < 0.05).astype(float)
            base = rng.normal(size=y.size)
            noise = rng.normal(size=(2, y.size))
            if not shift:  # calibrate once: the se of two equal scores on this design
                se = selection.delong_paired(base + noise[0], base + noise[1], y)["se"]
                shift["d"] = selection.detectable_difference(se, level)
            # positives ~ N(lift, 2), negatives ~ N(0, 2): AUC = Phi(lift / 2), the other 1/2
            lift = 2.0 * stats.norm.ppf(0.5 + frac * shift["d"])
            t = selection.delong_paired(base + lift * y + noise[0], base + noise[1], y)
            wins.append(t["p"] < level)
        shift[frac] = np.mean(wins)
    assert 0.65 <= shift[1.0] <= 0.93 and shift[0.5] < 0.5


def test_selection_lines_print_each_margin_and_warn_when_it_is_too_wide():
    from autoheri_jax.search.architecture import MAX_DETECTABLE_AUC, selection_lines
    from autoheri_jax.search.records import Comparison, ScoredCandidate, Selection

    def record(se, wins=False):
        d = selection.detectable_difference(se, 0.05)
        comp = Comparison(
            candidate="all",
            against="none",
            diff=0.004,
            se=se,
            p=0.2,
            level=0.05,
            detectable=d,
            wins=wins,
        )
        cands = [
            ScoredCandidate(name="none", edges=0, score=0.70),
            ScoredCandidate(name="all", edges=9, score=0.704),
        ]
        return Selection(
            criterion="ctcvr_auc",
            test="DeLong",
            alpha=0.05,
            candidates=cands,
            comparisons=[comp],
            chosen="none",
            positives=300,
        )

    narrow, wide = selection_lines(record(0.001)), selection_lines(record(0.006))
    assert "detects 0.0025 at 80% power" in narrow[1]
    assert not any("warning" in line for line in narrow)
    assert wide[-1].startswith("  warning: on 300 validation conversions the margin refused")
    assert f"{MAX_DETECTABLE_AUC}" in wide[-1]
    # a comparison that more edges won needed no power: no warning
    assert not any("warning" in line for line in selection_lines(record(0.006, wins=True)))


@pytest.mark.slow
def test_selection_scores_each_retrained_candidate_and_keeps_the_chosen_one():
    train_rows, valid = tiny_funnel()
    spec = build_spec(
        ModelConfig(embed_dim=4, hidden=(8, 6)), train_rows.vocab_sizes, train_rows.num_dense, 2
    )
    cfg = TrainConfig(epochs=1, batch_size=128, lr=1e-2, log_every=10)
    kept = np.zeros(spec.num_edges, bool)
    kept[0] = True
    out, chosen_mask, lanes = selection.select_architecture(
        spec, cfg, train_rows, valid, kept, "ctcvr_auc", 256
    )
    assert lanes.names == ["none", "evidence", "all"] and lanes.batch == "selection"
    assert [c.name for c in out.candidates] == ["none", "evidence", "all"]
    assert [c.edges for c in out.candidates] == [0, 1, spec.num_edges]
    assert len(out.comparisons) == 2 and out.alpha == 0.05
    assert all(0.0 <= c.p <= 1.0 and c.level == 0.025 for c in out.comparisons)
    assert out.positives == int(np.asarray(valid.labels)[:, -1].sum())
    chosen = next(c for c in out.candidates if c.name == out.chosen)
    np.testing.assert_array_equal(chosen_mask.sum(), chosen.edges)
    # more edges were taken only through a comparison that cleared the margin
    if out.chosen != "none":
        assert any(c.wins and c.candidate == out.chosen for c in out.comparisons)


def test_judge_refuses_more_edges_inside_the_noise_and_takes_them_beyond_it():
    """Hand-made validation logits: 'all' ranks the conversions a little better than 'none'
    on 60 positives (inside the noise), then far better (outside it)."""
    rng = np.random.default_rng(1)
    n = 4000
    y1 = rng.random(n) < 0.015
    labels = np.stack([np.ones(n), y1], 1).astype(np.float32)
    base = rng.normal(size=n)
    masks = np.array([[0, 0], [1, 1]], np.float32)
    for lift, chosen in ((0.05, "none"), (3.0, "all")):
        logits = np.zeros((2, n, 2))
        logits[0, :, 1] = base
        logits[1, :, 1] = base + lift * y1 + 0.3 * rng.normal(size=n)
        out, kept = selection.judge(["none", "all"], masks, logits, labels, "ctcvr_auc")
        assert out.chosen == chosen, out.comparisons
        assert kept.tolist() == ([False, False] if chosen == "none" else [True, True])
        scores = [c.score for c in out.candidates]
        assert scores[1] > scores[0]  # "all" scored higher both times


@pytest.mark.slow
def test_selection_checkpoints_its_batch_and_a_rerun_resumes_it(tmp_path):
    """The candidates' batch is a loop.train run: it leaves checkpoints, a rerun resumes from
    the last one (the same record), and the checkpoint of another evidence set is refused."""
    from autoheri_jax.config import CheckpointConfig
    from autoheri_jax.train.loop import Resumable

    train_rows, valid = tiny_funnel()
    spec = build_spec(
        ModelConfig(embed_dim=4, hidden=(8, 6)), train_rows.vocab_sizes, train_rows.num_dense, 2
    )
    cfg = TrainConfig(epochs=1, batch_size=128, lr=1e-2, log_every=10)
    ck = CheckpointConfig(every_steps=10, keep=2, keep_best=False, async_save=False)
    kept = np.zeros(spec.num_edges, bool)
    kept[0] = True

    def run(k):
        fp = selection.selection_fingerprint(spec, cfg, k)
        r = Resumable(tmp_path / "select", ck, {"phase": "search"}, fp)
        return selection.select_architecture(spec, cfg, train_rows, valid, k, "ctcvr_auc", 256, r)[
            0
        ]

    first = run(kept)
    assert any((tmp_path / "select").iterdir())
    again = run(kept)  # resumed at the final step: nothing left to train, the same scores
    assert again.candidates == first.candidates and again.chosen == first.chosen
    other = kept.copy()
    other[1] = True
    with pytest.raises(Exception, match="masks"):
        run(other)
