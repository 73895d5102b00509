"""The DDPM variational bound on the negative log-likelihood, in bits per dimension.

-log p(x_0) <= L = L_T + sum_{t=2}^{T} L_{t-1} + L_0        (Ho et al. 2020, eq. 5)
  L_T     = KL(q(x_T | x_0) || N(0, I))                     (the prior term)
  L_{t-1} = KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t))   with x_t ~ q(x_t | x_0)
  L_0     = -log p(x_0 | x_1), a discretized Gaussian over 256 bins of [-1, 1]  (eq. 13)

Indices here are 0-based like the schedule arrays: schedule index i in [0, T) is the paper's
t = i + 1. So index i >= 1 gives the KL term L_{i}, and index 0 gives the decoder term L_0.
Each term is summed over the image's dimensions and divided by (num_dims * ln 2) to give bits per
dimension, as in the DDPM code's `calc_bpd_loop` (which this follows: the model's mean is the
posterior mean at the predicted x_0, optionally clipped to [-1, 1]; the model variance is
"fixedlarge" (beta_t, with the posterior variance at t = 1) or "fixedsmall" (the posterior
variance)). Unlike that code, the normal CDF is the exact one, not a tanh approximation.

Subsampling: with `num_terms=K` < T - 1, the KL terms are evaluated at K of the T - 1 indices
1..T-1 (evenly spaced, deterministic) and their sum is multiplied by (T - 1) / K, an estimate of
the full sum (unbiased if the indices were drawn uniformly; evenly spaced gives lower variance
for the smooth per-t curves of trained models). L_0 and L_T are always computed exactly.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import log_ndtr, ndtr

from jaxdiff.diffusion import check_prediction_type, extract, to_x0_and_eps
from jaxdiff.schedules import NoiseSchedule
from jaxdiff.validation import InputError, check_choice, check_finite, check_images

MODEL_VARIANCES = ("fixedlarge", "fixedsmall")
_LOG2 = math.log(2.0)


def normal_kl(mean1, logvar1, mean2, logvar2):
    """KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))), elementwise, in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + jnp.exp(logvar1 - logvar2)
                  + (mean1 - mean2) ** 2 * jnp.exp(-logvar2))


def discretized_gaussian_log_likelihood(x, mean, log_scale):
    """log P(bin of x) under N(mean, exp(log_scale)^2) discretized to 256 bins of [-1, 1].

    Bins have width 2/255 centred at the data values; the first and last bins extend to -inf and
    +inf (Ho et al. 2020, eq. 13). Elementwise, in nats.
    """
    inv_std = jnp.exp(-log_scale)
    upper = inv_std * (x - mean + 1.0 / 255.0)
    lower = inv_std * (x - mean - 1.0 / 255.0)
    # Phi(upper) - Phi(lower), from the tail that keeps precision when both are close to 1.
    delta = jnp.where(lower > 0, ndtr(-lower) - ndtr(-upper), ndtr(upper) - ndtr(lower))
    log_mid = jnp.log(jnp.maximum(delta, 1e-12))
    return jnp.where(x < -0.999, log_ndtr(upper),
                     jnp.where(x > 0.999, log_ndtr(-lower), log_mid))


def _model_log_variance(schedule: NoiseSchedule, variance: str) -> jnp.ndarray:
    if variance == "fixedsmall":
        return schedule.posterior_log_variance_clipped
    # fixedlarge: beta_t, with the posterior variance at index 0 (DDPM code, "fixedlarge").
    return jnp.log(jnp.concatenate([schedule.posterior_variance[1:2], schedule.betas[1:]]))


def _mean_flat(x):
    return jnp.mean(x, axis=tuple(range(1, x.ndim)))


@functools.partial(jax.jit, static_argnames=("model_fn", "prediction_type", "variance",
                                             "clip_denoised"))
def _vb_terms(model_fn, schedule, x0, indices, noise, *, prediction_type, variance,
              clip_denoised):
    """Per-example bits/dim of the terms at `indices` (K,), noise (K, *x0.shape) -> (B, K)."""
    model_log_var = _model_log_variance(schedule, variance)
    batch = x0.shape[0]

    def term(_, inputs):
        i, eps = inputs
        t = jnp.full((batch,), i, dtype=jnp.int32)
        x_t = (extract(schedule.sqrt_alphas_cumprod, t, x0.ndim) * x0
               + extract(schedule.sqrt_one_minus_alphas_cumprod, t, x0.ndim) * eps)
        pred_x0, _ = to_x0_and_eps(schedule, x_t, t, model_fn(x_t, t), prediction_type)
        if clip_denoised:
            pred_x0 = jnp.clip(pred_x0, -1.0, 1.0)
        c1 = extract(schedule.posterior_mean_coef1, t, x0.ndim)
        c2 = extract(schedule.posterior_mean_coef2, t, x0.ndim)
        true_mean = c1 * x0 + c2 * x_t
        true_log_var = extract(schedule.posterior_log_variance_clipped, t, x0.ndim)
        model_mean = c1 * pred_x0 + c2 * x_t
        log_var = extract(model_log_var, t, x0.ndim)
        kl = _mean_flat(normal_kl(true_mean, true_log_var, model_mean, log_var)) / _LOG2
        nll = -_mean_flat(discretized_gaussian_log_likelihood(x0, model_mean,
                                                              0.5 * log_var)) / _LOG2
        return None, jnp.where(i == 0, nll, kl)

    _, terms = jax.lax.scan(term, None, (indices, noise))
    return terms.T


def prior_bpd(schedule: NoiseSchedule, x0) -> jnp.ndarray:
    """L_T = KL(q(x_T | x_0) || N(0, I)) in bits per dimension, (B,)."""
    abar = schedule.alphas_cumprod[-1]
    mean = jnp.sqrt(abar) * x0
    log_var = jnp.log1p(-abar) * jnp.ones_like(x0)
    return _mean_flat(normal_kl(mean, log_var, 0.0, 0.0)) / _LOG2


def bits_per_dim(model_fn: Callable, schedule: NoiseSchedule, x0, *, key=None, noise=None,
                 num_terms: int | None = None, prediction_type: str = "epsilon",
                 variance: str = "fixedlarge", clip_denoised: bool = True) -> dict:
    """The DDPM variational bound L (eq. 5) of a batch, in bits per dimension.

    Args:
      model_fn: `model_fn(x_t, t) -> prediction` (shape of x_t), a JAX-traceable callable; pass
        the same object on repeated calls to reuse the compiled loop.
      schedule: the noise schedule (T timesteps).
      x0: data (B, H, W, C) in [-1, 1] on the 256-level grid (uint8 / 127.5 - 1).
      key: typed key for the noise of each evaluated term (one fresh draw per term, as in the
        DDPM code); or give `noise` instead.
      noise: (K_eval, B, H, W, C) standard normal draws, one per evaluated index (see returns).
      num_terms: K, how many of the T - 1 KL terms to evaluate (default all); the sum of the K
        evaluated terms is weighted by (T - 1) / K.
      prediction_type: what model_fn predicts: "epsilon", "sample" or "v_prediction".
      variance: the model's reverse-process variance, "fixedlarge" (beta_t) or "fixedsmall"
        (the posterior variance beta~_t).
      clip_denoised: clip the predicted x_0 to [-1, 1] before forming the model mean.

    Returns:
      A dict of arrays: "total" (B,) = prior + kl + decoder; "prior" (B,) = L_T; "decoder" (B,)
      = L_0; "kl" (B,) = the (weighted) sum of L_1..L_{T-1}; "terms" (B, K_eval) the
      per-index values at "indices" (K_eval,) int32 (index 0, the decoder term, first; then the
      evaluated KL indices ascending). All in bits per dimension.

    References:
      Ho et al. 2020, eqs. 5 and 13, and `diffusion_utils_2.py: calc_bpd_loop` of their code.
    """
    check_images(x0, "x0")
    check_finite(x0, "x0")
    check_prediction_type(prediction_type)
    check_choice("model variance", variance, MODEL_VARIANCES)
    T = schedule.num_timesteps
    if num_terms is None:
        num_terms = T - 1
    if isinstance(num_terms, bool) or not isinstance(num_terms, (int, np.integer)) \
            or not 1 <= num_terms <= T - 1:
        raise InputError(f"num_terms must be an integer in [1, T-1] = [1, {T - 1}]; got "
                         f"{num_terms!r}")
    kl_idx = np.unique(np.round(np.linspace(1, T - 1, int(num_terms))).astype(np.int32))
    indices = np.concatenate([[0], kl_idx]).astype(np.int32)
    shape = (indices.shape[0],) + tuple(x0.shape)
    if noise is None:
        if key is None:
            raise InputError("bits_per_dim needs `key` (a jax.random.key) or explicit `noise`")
        noise = jax.random.normal(key, shape, dtype=jnp.float32)
    elif tuple(noise.shape) != shape:
        raise InputError(f"noise must have shape (num_evaluated_terms, *x0.shape) = {shape}; got "
                         f"{tuple(noise.shape)}")
    x0 = jnp.asarray(x0, dtype=jnp.float32)
    terms = _vb_terms(model_fn, schedule, x0, jnp.asarray(indices), jnp.asarray(noise, jnp.float32),
                      prediction_type=prediction_type, variance=variance,
                      clip_denoised=bool(clip_denoised))
    decoder = terms[:, 0]
    kl = terms[:, 1:].sum(axis=1) * ((T - 1) / kl_idx.shape[0])
    prior = prior_bpd(schedule, x0)
    return {"total": prior + kl + decoder, "prior": prior, "decoder": decoder, "kl": kl,
            "terms": terms, "indices": jnp.asarray(indices)}
