"""DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", Algorithm 2), data prediction, midpoint form.

With alpha_t = sqrt(abar_t), sigma_t = sqrt(1 - abar_t), lambda_t = log(alpha_t / sigma_t),
h_i = lambda_{t_i} - lambda_{t_{i-1}} and x0_i the denoiser's x0 at step i:

  first order:  x_{t_i} = sigma_{t_i} / sigma_{t_{i-1}} x_{t_{i-1}} - alpha_{t_i} (e^{-h_i} - 1) x0_{i-1}
  second order: the same with x0 replaced by D = (1 + 1/(2 r)) x0_{i-1} - 1/(2 r) x0_{i-2},
                r = h_{i-1} / h_i

as diffusers' DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=2,
solver_type="midpoint", lower_order_final=True, final_sigmas_type="zero"): the first step and the
last step (to sigma = 0, where the update is x0 itself) are first order, the others second order.
abar = 0 (zero terminal SNR) is replaced by 2**-24, as diffusers does. The timesteps are
diffusers' (see `spacing.py`: "linspace" and "leading" make n + 1 points and drop the last, as
the final step goes to sigma = 0 rather than to t = 0).
"""

from __future__ import annotations

import jax.numpy as jnp

from jaxdiff.sampling.base import Context, Sampler, StepInput, sigma_at, sigma_to_vp


def _alpha_sigma_lambda(sig):
    """VP (alpha_t, sigma_t, lambda_t) from the Karras sigma; sigma = 0 gives (1, 0, +inf)."""
    alpha, sigma = sigma_to_vp(sig)
    return alpha, sigma, jnp.log(alpha) - jnp.log(sigma)


def _init(ctx: Context, x_T, t0):
    return x_T, jnp.zeros_like(x_T)


def _step(ctx: Context, carry, inp: StepInput):
    x, x0_prev = carry
    alpha_s0, sigma_s0, lambda_s0 = _alpha_sigma_lambda(sigma_at(ctx.schedule, inp.t))
    _, _, lambda_s1 = _alpha_sigma_lambda(sigma_at(ctx.schedule, inp.t_prev))
    alpha_t, sigma_t, lambda_t = _alpha_sigma_lambda(sigma_at(ctx.schedule, inp.t_next))
    x0, _ = ctx.denoise(x, inp.t, alpha_s0, sigma_s0)
    h = lambda_t - lambda_s0
    second = (inp.k > 0) & (inp.k < ctx.num_steps - 1)
    r = jnp.where(second, (lambda_s0 - lambda_s1) / jnp.where(second, h, 1.0), 1.0)
    d = jnp.where(second, x0 + (x0 - x0_prev) / (2.0 * r), x0)
    x_t = (sigma_t / sigma_s0) * x - (alpha_t * (jnp.exp(-h) - 1.0)) * d
    return (x_t.astype(x.dtype), x0), x, x0


def _final(ctx: Context, carry):
    return carry[0]


DPMPP_2M = Sampler(init=_init, step=_step, final=_final, stochastic=False, sigma_space=True)
