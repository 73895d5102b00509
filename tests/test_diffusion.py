"""The forward process and parameterisation conversions against float64 numpy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiff import diffusion, losses
from jaxdiff.schedules import make_schedule

SCHEDULE = make_schedule("cosine", 1000)
ABAR = np.asarray(SCHEDULE.alphas_cumprod, np.float64)


def random_inputs(seed=0, shape=(5, 4, 3, 2)):
    rng = np.random.default_rng(seed)
    x0 = rng.uniform(-1, 1, shape).astype(np.float32)
    noise = rng.standard_normal(shape).astype(np.float32)
    t = rng.integers(0, 1000, shape[0]).astype(np.int32)
    return x0, noise, t


def test_q_sample_matches_numpy():
    x0, noise, t = random_inputs()
    got = jax.jit(diffusion.q_sample)(SCHEDULE, x0, t, noise)
    a = ABAR[t][:, None, None, None]
    np.testing.assert_allclose(got, np.sqrt(a) * x0 + np.sqrt(1 - a) * noise, rtol=1e-5,
                               atol=1e-6)


def test_velocity_matches_numpy():
    x0, noise, t = random_inputs(1)
    got = diffusion.velocity(SCHEDULE, x0, t, noise)
    a = ABAR[t][:, None, None, None]
    np.testing.assert_allclose(got, np.sqrt(a) * noise - np.sqrt(1 - a) * x0, rtol=1e-5,
                               atol=1e-6)


@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
def test_to_x0_and_eps_inverts_the_target(prediction_type):
    x0, noise, t = random_inputs(2)
    t = np.clip(t, 0, 900).astype(np.int32)  # x0 from eps is ill-conditioned where abar ~ 0
    x_t = diffusion.q_sample(SCHEDULE, x0, t, noise)
    target = diffusion.target(SCHEDULE, x0, t, noise, prediction_type)
    px0, peps = diffusion.to_x0_and_eps(SCHEDULE, x_t, t, target, prediction_type)
    np.testing.assert_allclose(px0, x0, atol=2e-4)
    np.testing.assert_allclose(peps, noise, atol=2e-4)


def test_posterior_matches_ddpm_eq_7():
    x0, noise, t = random_inputs(3)
    t = np.maximum(t, 1).astype(np.int32)
    x_t = diffusion.q_sample(SCHEDULE, x0, t, noise)
    mean, var, log_var = diffusion.posterior_mean_variance(SCHEDULE, x0, x_t, t)
    betas = 1 - np.asarray(SCHEDULE.alphas, np.float64)
    a, ap = ABAR[t], np.where(t > 0, ABAR[t - 1], 1.0)
    b = betas[t]
    c1 = (np.sqrt(ap) * b / (1 - a))[:, None, None, None]
    c2 = (np.sqrt(1 - b) * (1 - ap) / (1 - a))[:, None, None, None]
    np.testing.assert_allclose(mean, c1 * x0 + c2 * np.asarray(x_t, np.float64), rtol=1e-4,
                               atol=1e-5)
    np.testing.assert_allclose(var[:, 0, 0, 0], b * (1 - ap) / (1 - a), rtol=1e-4)
    np.testing.assert_allclose(log_var[:, 0, 0, 0], np.log(b * (1 - ap) / (1 - a)), rtol=1e-4)


def test_snr():
    t = np.array([0, 10, 500, 999], np.int32)
    np.testing.assert_allclose(diffusion.snr(SCHEDULE, t), ABAR[t] / (1 - ABAR[t]), rtol=1e-5)


@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
def test_loss_equals_hand_computed_mse(prediction_type):
    x0, noise, t = random_inputs(4)
    output = np.random.default_rng(5).standard_normal(x0.shape).astype(np.float32)
    a = ABAR[t][:, None, None, None]
    target = {"epsilon": noise, "sample": x0,
              "v_prediction": np.sqrt(a) * noise - np.sqrt(1 - a) * x0}[prediction_type]
    expected = ((output - target) ** 2).reshape(len(t), -1).mean(axis=1)
    got = losses.diffusion_loss(SCHEDULE, output, x0, t, noise, prediction_type)
    assert got.shape == (len(t),)
    np.testing.assert_allclose(got, expected, rtol=1e-5)


@pytest.mark.parametrize("prediction_type, factor", [
    ("epsilon", lambda s: np.minimum(s, 5.0) / s),
    ("v_prediction", lambda s: np.minimum(s, 5.0) / (s + 1)),
    ("sample", lambda s: np.minimum(s, 5.0)),
])
def test_min_snr_weights_follow_hang_et_al(prediction_type, factor):
    t = np.array([0, 100, 400, 999], np.int32)
    snr = ABAR[t] / (1 - ABAR[t])
    got = losses.loss_weight(SCHEDULE, t, prediction_type, "min_snr", 5.0)
    np.testing.assert_allclose(got, factor(snr), rtol=1e-4)


def test_drop_labels_rate():
    labels = jnp.zeros((20000,), jnp.int32)
    dropped = losses.drop_labels(jax.random.key(0), labels, 0.25, 10)
    assert set(np.unique(dropped)) == {0, 10}
    assert abs(float(jnp.mean(dropped == 10)) - 0.25) < 0.015


@pytest.mark.parametrize("x0, t, match", [
    (np.zeros((2, 4, 4), np.float32), np.zeros(2, np.int32), "NHWC with rank 4"),
    (np.zeros((2, 4, 4, 1), np.int32), np.zeros(2, np.int32), "must be floating point"),
    (np.zeros((2, 4, 4, 1), np.float32), np.zeros(3, np.int32), r"shape \(batch,\) = \(2,\)"),
    (np.zeros((2, 4, 4, 1), np.float32), np.zeros(2, np.float32), "must be integers"),
    (np.zeros((2, 4, 4, 1), np.float32), np.array([0, 1000], np.int32),
     r"must lie in \[0, 1000\)"),
    (np.zeros((2, 4, 4, 1), np.float32), np.array([-1, 0], np.int32), r"must lie in \[0, 1000\)"),
])
def test_q_sample_rejects_bad_input(x0, t, match):
    with pytest.raises((ValueError, TypeError), match=match):
        diffusion.q_sample(SCHEDULE, x0, t, np.zeros_like(x0, dtype=np.float32)
                           if x0.dtype == np.float32 else x0)


def test_q_sample_rejects_noise_of_other_shape():
    with pytest.raises(ValueError, match="x and noise must have the same shape"):
        diffusion.q_sample(SCHEDULE, np.zeros((2, 4, 4, 1), np.float32), np.zeros(2, np.int32),
                           np.zeros((2, 4, 4, 3), np.float32))


def test_unknown_prediction_type_raises():
    x0, noise, t = random_inputs()
    with pytest.raises(ValueError, match="unknown prediction_type 'score'; choose one of"):
        diffusion.target(SCHEDULE, x0, t, noise, "score")
