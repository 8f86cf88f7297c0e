import numpy as np
import pytest

from autoheri_jax.data.dataset import CTRDataset
from autoheri_jax.data.simulator import ALI_CCP_FIELDS, simulate_funnel

ROWS = 200_000


@pytest.fixture(scope="module")
def default_ds() -> CTRDataset:
    return simulate_funnel(num_rows=ROWS, seed=0)


def _arrays(ds: CTRDataset) -> dict[str, np.ndarray]:
    return {"sparse": ds.sparse, "dense": ds.dense, "labels": ds.labels, "probs": ds.true_probs}


def _logit(p: np.ndarray) -> np.ndarray:
    p = p.astype(np.float64)
    return np.log(p / (1.0 - p))


def test_ali_ccp_field_order():
    assert len(ALI_CCP_FIELDS) == 23
    assert ALI_CCP_FIELDS[0] == "101" and ALI_CCP_FIELDS[9] == "205"
    assert ALI_CCP_FIELDS[-4:] == ("109_14", "110_14", "127_14", "150_14")


def test_determinism_and_seed_sensitivity():
    kw = dict(num_rows=5_000, num_dense=3, noise_fields=2, num_stages=3, stage_rates=(0.3, 0.3))
    kw |= dict(num_users=2_000, num_items=5_000)
    a, b = simulate_funnel(seed=7, **kw), simulate_funnel(seed=7, **kw)
    c = simulate_funnel(seed=8, **kw)
    for name, arr in _arrays(a).items():
        assert np.array_equal(arr, _arrays(b)[name]), name
    assert a.vocab_sizes == b.vocab_sizes and a.field_names == b.field_names
    for name in ("sparse", "dense", "probs"):
        assert not np.array_equal(_arrays(a)[name], _arrays(c)[name]), name


def test_rows_are_a_prefix_of_longer_draws():
    short, long = simulate_funnel(num_rows=1_000, seed=3), simulate_funnel(num_rows=2_000, seed=3)
    for name, arr in _arrays(short).items():
        assert np.array_equal(arr, _arrays(long)[name][:1_000]), name


def test_shapes_dtypes_and_names():
    ds = simulate_funnel(num_rows=3_000, seed=1, num_dense=4, noise_fields=2)
    assert isinstance(ds, CTRDataset)
    assert ds.field_names == (*ALI_CCP_FIELDS, "noise_0", "noise_1")
    assert ds.sparse.shape == (3_000, 25) and ds.sparse.dtype == np.int32
    assert ds.dense.shape == (3_000, 4) and ds.dense.dtype == np.float32
    assert ds.dense_names == ("D0", "D1", "D2", "D3")
    assert ds.dense.min() >= 0.0 and ds.dense.max() <= 1.0
    assert ds.labels.shape == (3_000, 2) and ds.labels.dtype == np.float32
    assert ds.true_probs.shape == (3_000, 2) and ds.true_probs.dtype == np.float32
    assert ds.stage_names == ("click", "conversion")
    assert len(ds.vocab_sizes) == 25
    assert ds.vocab_sizes[0] == 20_001 and ds.vocab_sizes[9] == 50_001
    assert simulate_funnel(num_rows=10, seed=1).dense.shape == (10, 0)


def test_ids_within_vocab_and_never_zero(default_ds):
    ds = simulate_funnel(num_rows=20_000, seed=2, noise_fields=3)
    for d in (default_ds, ds):
        assert (d.sparse >= 1).all()
        assert (d.sparse < np.asarray(d.vocab_sizes)[None, :]).all()
    assert min(ds.vocab_sizes) >= 2 and max(ds.vocab_sizes[1:9]) <= 1_001


def test_vocab_fixed_by_world_not_sample():
    small = simulate_funnel(num_rows=50, seed=4)
    big = simulate_funnel(num_rows=5_000, seed=4)
    assert small.vocab_sizes == big.vocab_sizes


def test_labels_cumulative(default_ds):
    lab = default_ds.labels
    assert set(np.unique(lab)) <= {0.0, 1.0}
    assert (lab[:, 1] <= lab[:, 0]).all()


def test_rates_hit_targets(default_ds):
    lab = default_ds.labels
    ctr = lab[:, 0].mean()
    cvr = lab[lab[:, 0] == 1, 1].mean()
    assert abs(ctr - 0.04) / 0.04 < 0.20
    assert abs(cvr - 0.1) / 0.1 < 0.25


def test_true_probs_are_valid_and_bernoulli_consistent(default_ds):
    p, lab = default_ds.true_probs.astype(np.float64), default_ds.labels
    assert ((p > 0.0) & (p < 1.0)).all()
    reach = [p[:, 0], p[:, 0] * p[:, 1]]
    for k in range(2):
        sd = np.sqrt(np.sum(reach[k] * (1 - reach[k]))) / ROWS
        assert abs(lab[:, k].mean() - reach[k].mean()) < 5 * sd + 1e-4, k


def test_user_popularity_is_zipf_skewed(default_ds):
    counts = np.sort(np.bincount(default_ds.sparse[:, 0]))[::-1]
    top = counts[: 20_000 // 100].sum() / ROWS
    assert top > 0.2
    flat = simulate_funnel(num_rows=ROWS // 2, seed=0, zipf_exponent=0.0)
    counts = np.sort(np.bincount(flat.sparse[:, 0]))[::-1]
    assert counts[: 20_000 // 100].sum() / (ROWS // 2) < 0.05


def test_attributes_carry_signal(default_ds):
    # Users in different field-125 buckets should have clearly different true click rates.
    col = ALI_CCP_FIELDS.index("125")
    p = default_ds.true_probs[:, 0]
    means = [p[default_ds.sparse[:, col] == v].mean() for v in np.unique(default_ds.sparse[:, col])]
    assert max(means) > 1.2 * min(means)


def test_cascade_strength_controls_shared_signal():
    def corr(c: float) -> float:
        ds = simulate_funnel(num_rows=ROWS, seed=5, cascade_strength=c)
        return float(np.corrcoef(_logit(ds.true_probs[:, 0]), ds.true_probs[:, 1])[0, 1])

    c0, c9 = corr(0.0), corr(0.9)
    assert abs(c0) < 0.1
    assert c9 > c0 + 0.25


def test_three_stage_funnel():
    ds = simulate_funnel(num_rows=ROWS, seed=6, num_stages=3, stage_rates=(0.3, 0.2))
    assert ds.stage_names == ("click", "activation", "conversion")
    lab = ds.labels
    assert lab.shape == (ROWS, 3) and ds.true_probs.shape == (ROWS, 3)
    assert (np.diff(lab, axis=1) <= 0).all()
    assert abs(lab[:, 0].mean() - 0.04) / 0.04 < 0.2
    assert abs(lab[lab[:, 0] == 1, 1].mean() - 0.3) / 0.3 < 0.25
    assert abs(lab[lab[:, 1] == 1, 2].mean() - 0.2) / 0.2 < 0.25


@pytest.mark.parametrize(
    ("kwargs", "name", "shown"),
    [
        ({"num_rows": 0}, "num_rows", "0"),
        ({"num_rows": 1.5}, "num_rows", "1.5"),
        ({"seed": -1}, "seed", "-1"),
        ({"seed": True}, "seed", "True"),
        ({"num_stages": 4}, "num_stages", "4"),
        ({"num_users": 0}, "num_users", "0"),
        ({"num_items": -3}, "num_items", "-3"),
        ({"zipf_exponent": -0.5}, "zipf_exponent", "-0.5"),
        ({"zipf_exponent": float("nan")}, "zipf_exponent", "nan"),
        ({"click_rate": 0.0}, "click_rate", "0.0"),
        ({"click_rate": 1.2}, "click_rate", "1.2"),
        ({"stage_rates": (0.1, 0.2)}, "stage_rates", "(0.1, 0.2)"),
        ({"stage_rates": (1.0,)}, "stage_rates", "1.0"),
        ({"stage_rates": 0.1}, "stage_rates", "0.1"),
        ({"num_stages": 3}, "stage_rates", "(0.1,)"),
        ({"cascade_strength": 1.5}, "cascade_strength", "1.5"),
        ({"cascade_strength": -0.1}, "cascade_strength", "-0.1"),
        ({"num_dense": -1}, "num_dense", "-1"),
        ({"latent_dim": 0}, "latent_dim", "0"),
        ({"noise_fields": -2}, "noise_fields", "-2"),
    ],
)
def test_bad_arguments_raise(kwargs, name, shown):
    args = {"num_rows": 10, "seed": 0} | kwargs
    with pytest.raises(ValueError, match=name) as info:
        simulate_funnel(**args)
    assert f"got {shown}" in str(info.value)
