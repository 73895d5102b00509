"""DDIM (Song et al. 2021, eq. 12) on a subsequence of timesteps, any eta >= 0.

From x_t at timestep t to timestep s (`StepInput.t_next`; s < 0 is the clean image with
abar_s = the run's final_alpha_cumprod: 1, or abar_0 for diffusers' `set_alpha_to_one=False`):

  sigma = eta sqrt((1 - abar_s) / (1 - abar_t)) sqrt(1 - abar_t / abar_s)      (eq. 16)
  x_s   = sqrt(abar_s) x0 + sqrt(1 - abar_s - sigma^2) eps + sigma z

eps is the model's (from the unclipped output), x0 the clipped/thresholded one, as diffusers'
DDIMScheduler with `use_clipped_model_output=False`. eta = 0 is the deterministic DDIM ODE
solver, eta = 1 DDPM's fixed_small ancestral step.

s is diffusers' DDIMScheduler `prev_timestep` t - T // num_steps by default. That is the next
listed timestep for "leading", and for "trailing" when num_steps divides T, but not for
"linspace" (where the steps land between the listed timesteps, and the last one at t = 0 or
below). `timestep_rule="shared"` steps to the next listed timestep instead.
"""

from __future__ import annotations

import jax.numpy as jnp

from jaxdiff.sampling.base import Context, Sampler, StepInput, alpha_cumprod_at, vp_coefficients


def _init(ctx: Context, x_T, t0):
    return x_T


def _step(ctx: Context, x, inp: StepInput):
    a_t = alpha_cumprod_at(ctx.schedule, inp.t)
    a_s = alpha_cumprod_at(ctx.schedule, inp.t_next, ctx.final_alpha_cumprod)
    x0, eps = ctx.denoise(x, inp.t, *vp_coefficients(a_t))
    var = (1.0 - a_s) / (1.0 - a_t) * (1.0 - a_t / a_s)
    std = ctx.eta * jnp.sqrt(var)
    x_s = jnp.sqrt(a_s) * x0 + jnp.sqrt(1.0 - a_s - std ** 2) * eps + std * inp.noise
    return x_s.astype(x.dtype), x, x0


def _final(ctx: Context, x):
    return x


DDIM = Sampler(init=_init, step=_step, final=_final, stochastic=True)
