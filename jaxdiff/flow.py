"""Flow matching (rectified flow): the straight path between data and noise.

x_u = (1 - u) x0 + u noise for u in [0, 1]; the model predicts the velocity dx_u/du = noise - x0
(Lipman et al. 2023; Liu et al. 2023; Esser et al. 2024, SD3). The network sees the float
timestep 1000 u, as diffusers' SD3/Flux pipelines feed it. All functions are pure; `u` has shape
(batch,) and is broadcast over the image axes of NHWC arrays.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxdiff.validation import InputError, check_choice

# How u is drawn in training: uniform on (0, 1), or sigmoid of N(mean, std) (SD3's logit-normal,
# Esser et al. 2024 sec. 3.1); either may then be shifted (`shift_u`).
TIME_SAMPLINGS = ("uniform", "logit_normal")
TIMESTEP_SCALE = 1000.0


def _broadcast(u, ndim: int):
    return u.reshape(u.shape + (1,) * (ndim - u.ndim))


def interpolate(x0, u, noise):
    """x_u = (1 - u) x0 + u noise; x0, noise (B, H, W, C), u (B,)."""
    u = _broadcast(u, x0.ndim).astype(x0.dtype)
    return (1.0 - u) * x0 + u * noise


def velocity_target(x0, noise):
    """The regression target noise - x0 (the path's constant velocity)."""
    return noise - x0


def x0_from_velocity(x_u, u, v):
    """The clean image implied by velocity v at x_u: x0 = x_u - u v."""
    return x_u - _broadcast(u, x_u.ndim).astype(x_u.dtype) * v


def shift_u(u, shift):
    """SD3's timestep shift shift u / (1 + (shift - 1) u) (shift > 1 moves u towards noise);
    the same map diffusers' FlowMatchEulerDiscreteScheduler applies to its sigmas."""
    return shift * u / (1.0 + (shift - 1.0) * u)


def check_time_sampling(name: str, logit_std: float, shift: float) -> str:
    check_choice("diffusion.flow_time_sampling", name, TIME_SAMPLINGS)
    if not float(logit_std) > 0:
        raise InputError(f"diffusion.flow_logit_std must be > 0; got {logit_std!r}")
    if not float(shift) > 0:
        raise InputError(f"diffusion.flow_shift must be > 0; got {shift!r}")
    return name


def sample_u(key: jax.Array, batch: int, time_sampling: str = "uniform", logit_mean: float = 0.0,
             logit_std: float = 1.0, shift: float = 1.0) -> jax.Array:
    """Training times u of shape (batch,) in (0, 1), float32.

    "uniform": U(0, 1); "logit_normal": sigmoid(N(logit_mean, logit_std^2)); then `shift_u`
    with `shift` (1: unchanged).
    """
    check_time_sampling(time_sampling, logit_std, shift)
    if time_sampling == "uniform":
        u = jax.random.uniform(key, (batch,), jnp.float32)
    else:
        u = jax.nn.sigmoid(logit_mean + logit_std * jax.random.normal(key, (batch,), jnp.float32))
    return shift_u(u, shift)
