"""The fast evaluation path gives the metrics of the direct one (tests/reference_metrics.py):
one sort per score column, the packed integer sort, the keys scored in threads."""

import itertools

import numpy as np
import pytest

from autoheri_jax import metrics
from autoheri_jax.data.simulator import simulate_funnel
from tests import reference_eval as reference


def _scores(rng, n, kind):
    if kind == "float32":
        return rng.random(n, dtype=np.float32)
    if kind == "ties32":  # few distinct values: long runs of ties
        return (rng.integers(0, 7, n) / 7).astype(np.float32)
    if kind == "float64_exact":  # float64 that float32 holds: the packed sort
        return rng.random(n, dtype=np.float32).astype(np.float64)
    if kind == "float64":  # the argsort fallback
        return rng.random(n)
    if kind == "signed":  # negatives, both zeros, infinities
        s = rng.normal(size=n).astype(np.float32)
        s[::7] = 0.0
        s[3::7] = -0.0
        s[5::11] = np.inf
        s[6::13] = -np.inf
        return s
    if kind == "nan":  # NaN: the argsort fallback
        s = rng.random(n)
        s[::9] = np.nan
        return s
    raise ValueError(kind)


KINDS = ["float32", "ties32", "float64_exact", "float64", "signed", "nan"]


@pytest.mark.parametrize("kind", KINDS)
def test_rank_is_the_stable_argsort(kind):
    s = _scores(np.random.default_rng(0), 1000, kind)
    r = metrics.rank(s)
    order = np.argsort(np.asarray(s, np.float64), kind="stable")
    np.testing.assert_array_equal(r.order, order)  # -0.0 == +0.0: a tie in row order, too
    np.testing.assert_array_equal(r.scores, np.asarray(s, np.float64)[order])
    ordered = np.asarray(s, np.float64)[order]
    new = ~((ordered[1:] == ordered[:-1]) | (np.isnan(ordered[1:]) & np.isnan(ordered[:-1])))
    if kind != "nan":
        np.testing.assert_array_equal(r.starts, np.flatnonzero(np.concatenate([[True], new])))


def test_rank_of_nothing_and_of_one():
    for s in (np.zeros(0, np.float32), np.array([0.5], np.float32)):
        r = metrics.rank(s)
        assert len(r.order) == len(s) and len(r.starts) == len(s)


@pytest.mark.parametrize("kind", KINDS)
def test_auc_and_calibration_equal_the_reference(kind):
    rng = np.random.default_rng(1)
    s = _scores(rng, 5000, kind)
    y = (rng.random(5000) < 0.2).astype(np.int8)
    state = metrics.BinaryScores(s, y)
    if kind == "nan":  # undefined, as scipy's midranks made it
        assert np.isnan(metrics.auc(state)) and np.isnan(reference.auc(state))
        return
    assert metrics.auc(state) == reference.auc(state)
    p = rng.random(5000)
    if kind != "signed":
        assert metrics.soft_auc(s, p) == reference.soft_auc(s, p)
    assert metrics.reliability(s, y) == reference.reliability(s, y)
    assert metrics.reliability(s, p, 7) == reference.reliability(s, p, 7)


def test_subset_ranking_equals_ranking_the_subset():
    rng = np.random.default_rng(2)
    s = _scores(rng, 3000, "ties32")
    rows = rng.random(3000) < 0.1
    got, want = metrics.subset_ranked(metrics.rank(s), rows), metrics.rank(s[rows])
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)


def _funnel_inputs(num_stages, dtype, ties):
    data = simulate_funnel(
        num_rows=20_000, seed=3, num_stages=num_stages, stage_rates=(0.1,) * (num_stages - 1)
    )
    rng = np.random.default_rng(4)
    truth = data.true_probs
    cond = np.clip(truth + 0.05 * rng.normal(size=truth.shape), 0.0, 1.0).astype(dtype)
    if ties:
        cond = (np.round(cond * 50) / 50).astype(dtype)
    entire = np.cumprod(cond, axis=1)
    return data.labels, cond, entire, data.stage_names, truth


@pytest.mark.parametrize("num_stages", [2, 3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("ties", [False, True])
def test_funnel_metrics_equal_the_reference_on_simulated_data(num_stages, dtype, ties):
    labels, cond, entire, stages, truth = _funnel_inputs(num_stages, dtype, ties)
    for true_cond in (None, truth):
        got = metrics.funnel_metrics(labels, cond, entire, stages, true_cond)
        want = reference.funnel_metrics(labels, cond, entire, stages, true_cond)
        assert got == want  # every field, bit for bit
        assert list(got) == list(want) and all(list(got[k]) == list(want[k]) for k in got)


def test_funnel_metrics_of_the_oracle_and_of_no_clicks_equal_the_reference():
    labels, _, _, stages, truth = _funnel_inputs(2, np.float32, False)
    entire = np.cumprod(truth, axis=1)
    got = metrics.funnel_metrics(labels, truth, entire, stages, truth)
    assert got == reference.funnel_metrics(labels, truth, entire, stages, truth)
    none = np.zeros_like(labels)  # nobody clicked: cvr scores no row
    got = metrics.funnel_metrics(none, truth, entire, stages, truth)
    assert got == reference.funnel_metrics(none, truth, entire, stages, truth)
    assert got["cvr"]["auc"] is None and got["cvr"]["rows"] == 0


# --- predictions: the evaluation batches (each distinct bag once) against training batches


@pytest.fixture(scope="module")
def bag_store(tmp_path_factory):
    """A small Ali-CCP-shaped store: shared user bags (rows of one user scattered, some bags
    empty) and per-row item bags."""
    from autoheri_jax.data.aliccp_raw import prepare_aliccp_raw
    from tests.test_prepare_aliccp import make_raw, write_raw

    root = tmp_path_factory.mktemp("bags")
    raw = write_raw(root / "raw", make_raw(n_train=300, n_test=233, n_users=20)["lines"])
    prepare_aliccp_raw(raw, root / "store", min_count=1, progress=False)
    return root / "store"


def _model(data, seed=0, **kw):
    import jax

    from autoheri_jax.config import ModelConfig
    from autoheri_jax.model.build import build_spec
    from autoheri_jax.model.network import init_params

    cfg = ModelConfig(**({"embed_dim": 4, "hidden": (8, 4)} | kw))
    spec = build_spec(cfg, data.vocab_sizes, data.num_dense, data.num_stages, data.bag_vocab_sizes)
    return spec, jax.device_get(init_params(jax.random.key(seed), spec))


@pytest.mark.parametrize(
    "model_kw",
    [{}, {"bag_pooling": "sum", "bag_value_weighted": True}, {"edge_mode": "hierarchical"}],
)
def test_evaluation_batches_predict_as_training_batches_on_a_store_with_bags(bag_store, model_kw):
    import dataclasses

    from autoheri_jax.data.eval_batches import EvalBatches
    from autoheri_jax.data.store import open_split
    from autoheri_jax.train.predict import predict_models

    test = open_split(bag_store, "test")
    shared = [b for b in test.bags if b.row_of is not None]
    assert shared and len(shared) < len(test.bags)  # both kinds of bag field
    spec, params = _model(test, **model_kw)
    for max_len, batch_size in ((32, 64), (2, 50), (32, 10_000)):
        data = dataclasses.replace(test, max_bag_len=max_len)  # 2: bags truncated
        got = predict_models([(spec, params)], data, batch_size)[0]
        want = reference.predict(spec, params, data, batch_size)
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-7)
        labels = np.asarray(data.labels, np.float32)
        new = metrics.funnel_metrics(labels, *got, data.stage_names)
        old = reference.funnel_metrics(labels, *want, data.stage_names)
        _assert_metrics_close(new, old)
    batch = EvalBatches(test, 64).batch(0).inputs
    for b, field in zip(batch["bags"], test.bags, strict=True):  # each distinct bag once
        if field.row_of is not None:
            assert len(np.unique(b["slot"])) == len(np.unique(field.row_of[:64]))
            assert len(b["ids"]) < 64


def _assert_metrics_close(got, want):
    assert got.keys() == want.keys()
    for key in got:
        assert got[key].keys() == want[key].keys()
        for name, value in got[key].items():
            other = want[key][name]
            if isinstance(value, dict):
                for k, v in value.items():
                    np.testing.assert_allclose(v, other[k], rtol=1e-5, atol=1e-6)
            elif value is None or isinstance(value, int):
                assert value == other, (key, name)
            else:
                assert value == pytest.approx(other, rel=1e-5, abs=1e-6), (key, name)


def test_several_models_in_one_pass_equal_each_alone_and_the_reference_on_simulated_data():
    from autoheri_jax.train.predict import predict_dataset, predict_models

    data = simulate_funnel(num_rows=3001, seed=5, num_dense=2)
    models = [_model(data, seed=1), _model(data, seed=2, edge_mode="hierarchical")]
    together = predict_models(models, data, 512)
    for (spec, params), (cond, entire) in zip(models, together, strict=True):
        alone = predict_dataset(spec, params, data, 512)
        want = reference.predict(spec, params, data, 512)
        for a, b, c in zip((cond, entire), alone, want, strict=True):
            np.testing.assert_array_equal(a, b)
            np.testing.assert_array_equal(a, c)  # no bags: the same forward, bit for bit
        new = metrics.funnel_metrics(data.labels, cond, entire, data.stage_names, data.true_probs)
        old = reference.funnel_metrics(*(data.labels, *want), data.stage_names, data.true_probs)
        assert new == old


def test_a_pass_meets_few_shapes_and_never_shrinks_one(bag_store):
    """Bucketed sizes only grow during a pass: a few compilations, the short last batch none."""
    from autoheri_jax.data.eval_batches import EvalBatches, bucket
    from autoheri_jax.data.store import open_split

    test = open_split(bag_store, "test")
    shapes = [
        tuple(b["ids"].shape for b in batch.inputs["bags"]) for batch in EvalBatches(test, 40)
    ]
    assert len(shapes) == -(-test.num_rows // 40) and len(set(shapes)) <= 3
    for before, after in itertools.pairwise(shapes):
        sizes = zip(np.ravel(before), np.ravel(after), strict=True)
        assert all(a <= b for a, b in sizes)
    assert [bucket(n, 64) for n in (0, 1, 8, 9, 33, 64, 65)] == [8, 8, 8, 16, 64, 64, 64]
    assert bucket(3, 2) == 2
