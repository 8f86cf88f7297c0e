import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from autoheri_jax.model.gates import bernoulli_entropy_from_logits, edge_entropy, entropy_weight_at
from autoheri_jax.model.losses import entire_space_bce, funnel_log_probs


def _naive_bce(logits, labels):
    z = np.asarray(logits, np.float64)
    p = np.cumprod(1 / (1 + np.exp(-z)), axis=1)
    y = np.asarray(labels, np.float64)
    return -(y * np.log(p) + (1 - y) * np.log(1 - p)).mean(0)


@pytest.mark.parametrize("stages", [2, 3])
def test_entire_space_bce_matches_product_formula(stages):
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (256, stages)).astype(np.float32)
    labels = np.cumprod(rng.random((256, stages)) < 0.4, axis=1).astype(np.float32)
    np.testing.assert_allclose(
        entire_space_bce(logits, labels), _naive_bce(logits, labels), rtol=1e-5
    )


@pytest.mark.slow
def test_extreme_logits_are_finite_and_exact():
    big = 1e4
    logits = jnp.array([[big, big], [big, big], [-big, -big], [big, -big], [-big, big]])
    labels = jnp.array([[1, 1], [0, 0], [0, 0], [1, 0], [0, 0]], jnp.float32)
    log_p, log_not_p = funnel_log_probs(logits)
    assert np.all(np.isfinite(log_p)) and np.all(np.isfinite(log_not_p))
    # row 1: P_1 = sigmoid(1e4)^2, so log(1 - P_1) = log(2 e^-1e4 - e^-2e4) = -1e4 + log 2
    np.testing.assert_allclose(log_not_p[1, 1], -big + np.log(2.0), rtol=1e-6)
    np.testing.assert_allclose(log_p[2], [-big, -2 * big], rtol=1e-6)
    np.testing.assert_allclose(log_not_p[3, 1], 0.0, atol=1e-6)  # P_1 ~ e^-1e4
    per_row = -(labels * log_p + (1 - labels) * log_not_p)
    np.testing.assert_allclose(per_row[0], [0, 0], atol=1e-6)  # confident and right
    np.testing.assert_allclose(per_row[1], [big, big - np.log(2.0)], rtol=1e-6)  # confidently wrong
    loss = entire_space_bce(logits, labels)
    grads = jax.grad(lambda z: jnp.sum(entire_space_bce(z, labels)))(logits)
    assert np.all(np.isfinite(loss)) and np.all(np.isfinite(grads))


def test_entropy_is_symmetric_and_vanishes_at_the_corners():
    h = bernoulli_entropy_from_logits(jnp.array([0.0, 3.0, -3.0, 50.0, -50.0]))
    np.testing.assert_allclose(h[0], np.log(2.0), rtol=1e-6)
    np.testing.assert_allclose(h[1], h[2], rtol=1e-6)
    assert h[3] < 1e-15 and h[4] < 1e-15
    assert float(edge_entropy(None)) == 0.0


def test_entropy_regulariser_drives_probabilities_to_zero_or_one():
    logits = jnp.array([-0.3, -0.05, 0.05, 0.2, 0.6])
    opt = optax.adam(0.1)
    state = opt.init(logits)

    @jax.jit
    def step(z, s):
        g = jax.grad(edge_entropy)(z)
        u, s = opt.update(g, s, z)
        return optax.apply_updates(z, u), s

    for _ in range(300):
        logits, state = step(logits, state)
    p = np.asarray(jax.nn.sigmoid(logits))
    assert np.all((p < 0.01) | (p > 0.99)), p
    np.testing.assert_array_equal(p > 0.5, [False, False, True, True, True])  # sides kept


def test_entropy_warmup_schedule():
    assert float(entropy_weight_at(jnp.int32(0), 0.4, 100)) == 0.0
    np.testing.assert_allclose(entropy_weight_at(jnp.int32(50), 0.4, 100), 0.2)
    np.testing.assert_allclose(entropy_weight_at(jnp.int32(500), 0.4, 100), 0.4)
    np.testing.assert_allclose(entropy_weight_at(jnp.int32(0), 0.4, 0), 0.4)
