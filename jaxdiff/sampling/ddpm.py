"""DDPM ancestral sampling (Ho et al. 2020, eqs. 6-7) on a subsequence of timesteps.

From x_t at timestep t to the next listed timestep s (-1 after the last, abar_{-1} = 1, as
diffusers' DDPMScheduler `previous_timestep` for every spacing), with
alpha = abar_t / abar_s and beta = 1 - alpha (the one-step values of the subsequence):

  mean = sqrt(abar_s) beta / (1 - abar_t) x0 + sqrt(alpha) (1 - abar_s) / (1 - abar_t) x_t
  var  = (1 - abar_s) / (1 - abar_t) beta   ("fixed_small", clamped at 1e-20)  or  beta  ("fixed_large")
  x_s  = mean + sqrt(var) z    (z only where t > 0, as diffusers' DDPMScheduler)
"""

from __future__ import annotations

import jax.numpy as jnp

from jaxdiff.sampling.base import Context, Sampler, StepInput, alpha_cumprod_at, vp_coefficients

VARIANCE_TYPES = ("fixed_small", "fixed_large")


def _init(ctx: Context, x_T, t0):
    return x_T


def _step(ctx: Context, x, inp: StepInput):
    a_t = alpha_cumprod_at(ctx.schedule, inp.t)
    a_s = alpha_cumprod_at(ctx.schedule, inp.t_next)
    alpha = a_t / a_s
    beta = 1.0 - alpha
    x0, _ = ctx.denoise(x, inp.t, *vp_coefficients(a_t))
    mean = (jnp.sqrt(a_s) * beta / (1.0 - a_t)) * x0 + (jnp.sqrt(alpha) * (1.0 - a_s)
                                                        / (1.0 - a_t)) * x
    if ctx.variance_type == "fixed_small":
        var = jnp.maximum((1.0 - a_s) / (1.0 - a_t) * beta, 1e-20)
    else:
        var = beta
    std = jnp.where(inp.t > 0, jnp.sqrt(var), 0.0)
    return (mean + std * inp.noise).astype(x.dtype), x, x0


def _final(ctx: Context, x):
    return x


DDPM = Sampler(init=_init, step=_step, final=_final, stochastic=True)
