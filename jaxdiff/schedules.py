"""Noise schedules: the betas of the forward process and everything derived from them.

A `NoiseSchedule` is data (a pytree of float32 arrays), so it passes through `jit`, `scan` and
sharding unchanged. All constructors compute in float64 with numpy and store float32, so the
values equal those of the diffusers schedulers of the same name to float32 precision.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxdiff.validation import InputError, check_choice


@struct.dataclass
class NoiseSchedule:
    """Per-timestep constants of the discrete forward process q(x_t | x_0), t in [0, T).

    Attributes (all float32 arrays of shape (T,)):
      betas: variance added at step t.
      alphas: 1 - betas.
      alphas_cumprod: prod_{s<=t} alphas_s ("alpha bar").
      alphas_cumprod_prev: alphas_cumprod shifted right by one, with 1.0 at t=0.
      sqrt_alphas_cumprod, sqrt_one_minus_alphas_cumprod: the signal and noise scales of x_t.
      posterior_variance: variance of q(x_{t-1} | x_t, x_0) (DDPM eq. 7, "fixed_small").
      posterior_log_variance_clipped: its log, with t=0 replaced by t=1 (it is 0 there).
      posterior_mean_coef1, posterior_mean_coef2: mean = coef1 * x_0 + coef2 * x_t.
    """

    betas: jnp.ndarray
    alphas: jnp.ndarray
    alphas_cumprod: jnp.ndarray
    alphas_cumprod_prev: jnp.ndarray
    sqrt_alphas_cumprod: jnp.ndarray
    sqrt_one_minus_alphas_cumprod: jnp.ndarray
    posterior_variance: jnp.ndarray
    posterior_log_variance_clipped: jnp.ndarray
    posterior_mean_coef1: jnp.ndarray
    posterior_mean_coef2: jnp.ndarray

    @property
    def num_timesteps(self) -> int:
        return int(self.betas.shape[0])


def from_betas(betas) -> NoiseSchedule:
    """Builds a schedule from betas of shape (T,), each in (0, 1].

    Example:
      >>> s = from_betas(np.linspace(1e-4, 0.02, 1000))
      >>> s.num_timesteps
      1000
    """
    betas = np.asarray(betas, dtype=np.float64)
    if betas.ndim != 1 or betas.shape[0] < 1:
        raise InputError(f"betas must be a 1-D array with at least one value; got shape "
                         f"{betas.shape}")
    if not np.all(np.isfinite(betas)) or np.any(betas < 0) or np.any(betas > 1):
        raise InputError(f"betas must be finite and in [0, 1]; got values from {betas.min()} to "
                         f"{betas.max()}")
    alphas = 1.0 - betas
    alphas_cumprod = np.cumprod(alphas)
    alphas_cumprod_prev = np.append(1.0, alphas_cumprod[:-1])
    posterior_variance = betas * (1.0 - alphas_cumprod_prev) / np.maximum(1.0 - alphas_cumprod,
                                                                          1e-20)
    clipped = np.append(posterior_variance[1:2], posterior_variance[1:]) if betas.shape[0] > 1 \
        else posterior_variance
    arrays = dict(
        betas=betas,
        alphas=alphas,
        alphas_cumprod=alphas_cumprod,
        alphas_cumprod_prev=alphas_cumprod_prev,
        sqrt_alphas_cumprod=np.sqrt(alphas_cumprod),
        sqrt_one_minus_alphas_cumprod=np.sqrt(1.0 - alphas_cumprod),
        posterior_variance=posterior_variance,
        posterior_log_variance_clipped=np.log(np.maximum(clipped, 1e-20)),
        posterior_mean_coef1=betas * np.sqrt(alphas_cumprod_prev) / np.maximum(
            1.0 - alphas_cumprod, 1e-20),
        posterior_mean_coef2=(1.0 - alphas_cumprod_prev) * np.sqrt(alphas) / np.maximum(
            1.0 - alphas_cumprod, 1e-20),
    )
    return NoiseSchedule(**{k: jnp.asarray(v, dtype=jnp.float32) for k, v in arrays.items()})


def linear_betas(num_timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02):
    """DDPM's linear schedule (Ho et al. 2020): betas evenly spaced from beta_start to beta_end."""
    return np.linspace(beta_start, beta_end, num_timesteps, dtype=np.float64)


def scaled_linear_betas(num_timesteps: int, beta_start: float = 0.00085,
                        beta_end: float = 0.012):
    """Stable Diffusion's schedule: evenly spaced in sqrt(beta), then squared."""
    return np.linspace(beta_start ** 0.5, beta_end ** 0.5, num_timesteps, dtype=np.float64) ** 2


def cosine_betas(num_timesteps: int, s: float = 0.008, max_beta: float = 0.999):
    """Nichol & Dhariwal 2021, eq. 17: alpha_bar(t) = cos^2((t/T + s)/(1 + s) * pi/2).

    betas are 1 - alpha_bar(i+1)/alpha_bar(i), clipped at max_beta (diffusers
    "squaredcos_cap_v2").
    """

    def alpha_bar(u):
        return math.cos((u + s) / (1 + s) * math.pi / 2) ** 2

    return np.array([min(1 - alpha_bar((i + 1) / num_timesteps) / alpha_bar(i / num_timesteps),
                         max_beta) for i in range(num_timesteps)], dtype=np.float64)


def sigmoid_betas(num_timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02):
    """Sigmoid of evenly spaced points in [-6, 6], scaled to [beta_start, beta_end] (diffusers)."""
    x = np.linspace(-6.0, 6.0, num_timesteps, dtype=np.float64)
    return 1.0 / (1.0 + np.exp(-x)) * (beta_end - beta_start) + beta_start


def rescale_zero_terminal_snr(betas):
    """Lin et al. 2024, Algorithm 1: shift/scale sqrt(alpha_bar) so the last step has SNR 0."""
    alphas_bar_sqrt = np.sqrt(np.cumprod(1.0 - np.asarray(betas, dtype=np.float64)))
    first, last = alphas_bar_sqrt[0], alphas_bar_sqrt[-1]
    alphas_bar_sqrt = (alphas_bar_sqrt - last) * first / (first - last)
    alphas_bar = alphas_bar_sqrt ** 2
    alphas = np.concatenate([alphas_bar[:1], alphas_bar[1:] / alphas_bar[:-1]])
    return 1.0 - alphas


SCHEDULES: dict[str, Callable[..., np.ndarray]] = {
    "linear": linear_betas,
    "scaled_linear": scaled_linear_betas,
    "cosine": cosine_betas,
    "sigmoid": sigmoid_betas,
}


def make_schedule(name: str, num_timesteps: int = 1000, *, rescale_to_zero_terminal_snr=False,
                  **options) -> NoiseSchedule:
    """Builds a named schedule.

    Args:
      name: one of "linear", "scaled_linear", "cosine", "sigmoid".
      num_timesteps: T, the number of discrete noise levels (>= 2).
      rescale_to_zero_terminal_snr: rescale so alphas_cumprod[-1] == 0 (Lin et al. 2024).
      **options: passed to the betas function (beta_start/beta_end, or s/max_beta for cosine).

    Returns:
      A NoiseSchedule with arrays of shape (num_timesteps,).

    Example:
      >>> s = make_schedule("linear")
      >>> round(float(s.alphas_cumprod[-1]), 7)
      4.04e-05
    """
    check_choice("schedule", name, SCHEDULES)
    if isinstance(num_timesteps, bool) or not isinstance(num_timesteps, (int, np.integer)) \
            or num_timesteps < 2:
        raise InputError(f"num_timesteps must be an integer >= 2; got {num_timesteps!r}")
    try:
        betas = SCHEDULES[name](int(num_timesteps), **options)
    except TypeError as e:
        raise InputError(f"bad options {sorted(options)} for schedule {name!r}: {e}") from None
    if rescale_to_zero_terminal_snr:
        betas = rescale_zero_terminal_snr(betas)
    return from_betas(betas)
