"""Euler's method on the probability-flow ODE in sigma space (Karras et al. 2022, Algorithm 1
without churn; diffusers' EulerDiscreteScheduler with its defaults).

The state is x = x_vp * sqrt(sigma^2 + 1) with sigma_t = sqrt((1 - abar_t) / abar_t) at the
listed timesteps and sigma = 0 after the last. The model sees x / sqrt(sigma^2 + 1) and t;
d = (x - x0) / sigma; x_next = x + (sigma_next - sigma) d. diffusers' default "linspace" list is
fractional (999, 908.18..., ... for 12 steps): sigma is then interpolated linearly in t between
the table's entries and the model gets the float32 timestep, as EulerDiscreteScheduler does.

The start is x_T times diffusers' `init_noise_sigma`: sigma_max for "linspace" and "trailing",
sqrt(sigma_max^2 + 1) for "leading" (sigma_max the sigma of the first timestep).
"""

from __future__ import annotations

import jax.numpy as jnp

from jaxdiff.sampling.base import Context, Sampler, StepInput, sigma_at, sigma_to_vp


def init_noise_sigma(ctx: Context, t0):
    """diffusers' EulerDiscreteScheduler/HeunDiscreteScheduler.init_noise_sigma."""
    sig = sigma_at(ctx.schedule, t0)
    return jnp.where(ctx.leading, jnp.sqrt(sig ** 2 + 1.0), sig)


def denoise_sigma(ctx: Context, x, t, sig):
    """(x_vp, x0) for the sigma-space state x at timestep t with sigma `sig`."""
    alpha, sigma = sigma_to_vp(sig)
    x_vp = x / jnp.sqrt(sig ** 2 + 1.0)
    x0, _ = ctx.denoise(x_vp, t, alpha, sigma)
    return x_vp, x0


def scale_initial_noise(ctx: Context, x_T, t0):
    """x_T ~ N(0, I) scaled to the sigma-space start, as the diffusers pipelines do."""
    return (x_T * init_noise_sigma(ctx, t0)).astype(x_T.dtype)


def euler_predict(ctx: Context, x, inp: StepInput):
    """One Euler step: (x_next, x_vp, x0, sig, sig_next); Heun corrects this prediction."""
    sig = sigma_at(ctx.schedule, inp.t)
    sig_next = sigma_at(ctx.schedule, inp.t_next)
    x_vp, x0 = denoise_sigma(ctx, x, inp.t, sig)
    return euler_update(x, x0, sig, sig_next), x_vp, x0, sig, sig_next


def _step(ctx: Context, x, inp: StepInput):
    x_next, x_vp, x0, _, _ = euler_predict(ctx, x, inp)
    return x_next, x_vp, x0


def euler_update(x, x0, sig, sig_next):
    """x + (sig_next - sig) (x - x0) / sig, written as r x + (1 - r) x0 with r = sig_next / sig.

    The same number in exact arithmetic; this form avoids the cancellation of the large state
    x = x_vp sqrt(sigma^2 + 1) in float32 when sigma is large (2**12 at zero terminal SNR).
    """
    r = sig_next / sig
    return (r * x + (1.0 - r) * x0).astype(x.dtype)


def _final(ctx: Context, x):
    return x


EULER = Sampler(init=scale_initial_noise, step=_step, final=_final, stochastic=False, sigma_space=True)
