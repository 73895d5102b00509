"""The forward process and the conversions between what a model can predict.

All functions are pure and jit-friendly. `t` is an int32 array of shape (batch,); per-timestep
constants are gathered and broadcast over the image axes of NHWC arrays.

References: Ho et al. 2020 (DDPM) eqs. 4, 6, 7; Salimans & Ho 2022 (v-prediction) sec. 4.
"""

from __future__ import annotations

import jax.numpy as jnp

from jaxdiff.schedules import NoiseSchedule
from jaxdiff.validation import (
    InputTypeError,
    check_choice,
    check_images,
    check_same_shape,
    check_timesteps,
)

PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")


def check_prediction_type(prediction_type: str) -> str:
    return check_choice("prediction_type", prediction_type, PREDICTION_TYPES)


def extract(values: jnp.ndarray, t: jnp.ndarray, ndim: int) -> jnp.ndarray:
    """values[t] reshaped to (batch, 1, ..., 1) with `ndim` axes in all."""
    return values[t].reshape(t.shape + (1,) * (ndim - t.ndim))


def _check(schedule: NoiseSchedule, x, t, noise=None, what_noise: str = "noise") -> None:
    if not isinstance(schedule, NoiseSchedule):
        raise InputTypeError(f"schedule must be a NoiseSchedule (jaxdiff.schedules.make_schedule); "
                             f"got {type(schedule).__name__}")
    check_images(x, "x")
    check_timesteps(t, x.shape[0], schedule.num_timesteps)
    if noise is not None:
        check_same_shape(x, noise, "x", what_noise)


def q_sample(schedule: NoiseSchedule, x0, t, noise):
    """Samples x_t ~ q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I) (DDPM eq. 4).

    Args:
      schedule: the noise schedule.
      x0: clean images, float (B, H, W, C).
      t: int32 timesteps (B,) in [0, T).
      noise: standard normal draws, same shape as x0.

    Returns:
      x_t with the shape of x0.
    """
    _check(schedule, x0, t, noise)
    return (extract(schedule.sqrt_alphas_cumprod, t, x0.ndim) * x0
            + extract(schedule.sqrt_one_minus_alphas_cumprod, t, x0.ndim) * noise)


def velocity(schedule: NoiseSchedule, x0, t, noise):
    """v = sqrt(abar_t) eps - sqrt(1 - abar_t) x_0 (Salimans & Ho 2022)."""
    _check(schedule, x0, t, noise)
    return (extract(schedule.sqrt_alphas_cumprod, t, x0.ndim) * noise
            - extract(schedule.sqrt_one_minus_alphas_cumprod, t, x0.ndim) * x0)


def x0_from_eps(schedule: NoiseSchedule, x_t, t, eps):
    a = extract(schedule.sqrt_alphas_cumprod, t, x_t.ndim)
    s = extract(schedule.sqrt_one_minus_alphas_cumprod, t, x_t.ndim)
    return (x_t - s * eps) / a


def eps_from_x0(schedule: NoiseSchedule, x_t, t, x0):
    a = extract(schedule.sqrt_alphas_cumprod, t, x_t.ndim)
    s = extract(schedule.sqrt_one_minus_alphas_cumprod, t, x_t.ndim)
    return (x_t - a * x0) / s


def x0_from_v(schedule: NoiseSchedule, x_t, t, v):
    a = extract(schedule.sqrt_alphas_cumprod, t, x_t.ndim)
    s = extract(schedule.sqrt_one_minus_alphas_cumprod, t, x_t.ndim)
    return a * x_t - s * v


def eps_from_v(schedule: NoiseSchedule, x_t, t, v):
    a = extract(schedule.sqrt_alphas_cumprod, t, x_t.ndim)
    s = extract(schedule.sqrt_one_minus_alphas_cumprod, t, x_t.ndim)
    return s * x_t + a * v


def to_x0_and_eps(schedule: NoiseSchedule, x_t, t, model_output, prediction_type: str):
    """Converts a model output of any parameterisation to (predicted x0, predicted eps).

    This is the one place where parameterisation is handled; samplers work on (x0, eps).
    For "sample" at a timestep where sqrt(1 - abar_t) is 0 (zero terminal SNR), eps is undefined;
    we never hit that for "epsilon"/"v_prediction".
    """
    check_prediction_type(prediction_type)
    _check(schedule, x_t, t, model_output, "model output")
    if prediction_type == "epsilon":
        eps = model_output
        return x0_from_eps(schedule, x_t, t, eps), eps
    if prediction_type == "sample":
        x0 = model_output
        return x0, eps_from_x0(schedule, x_t, t, x0)
    if prediction_type == "v_prediction":
        return x0_from_v(schedule, x_t, t, model_output), eps_from_v(schedule, x_t, t,
                                                                      model_output)
    check_prediction_type(prediction_type)
    raise AssertionError("unreachable")


def target(schedule: NoiseSchedule, x0, t, noise, prediction_type: str):
    """The regression target a model of `prediction_type` is trained on."""
    check_prediction_type(prediction_type)
    _check(schedule, x0, t, noise)
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "sample":
        return x0
    return velocity(schedule, x0, t, noise)


def posterior_mean_variance(schedule: NoiseSchedule, x0, x_t, t):
    """Mean, variance and clipped log-variance of q(x_{t-1} | x_t, x_0) (DDPM eqs. 6-7)."""
    _check(schedule, x_t, t, x0)
    mean = (extract(schedule.posterior_mean_coef1, t, x_t.ndim) * x0
            + extract(schedule.posterior_mean_coef2, t, x_t.ndim) * x_t)
    var = extract(schedule.posterior_variance, t, x_t.ndim)
    log_var = extract(schedule.posterior_log_variance_clipped, t, x_t.ndim)
    return mean, var, log_var


def snr(schedule: NoiseSchedule, t):
    """Signal-to-noise ratio abar_t / (1 - abar_t) at timesteps t."""
    abar = schedule.alphas_cumprod[t]
    return abar / (1.0 - abar)
