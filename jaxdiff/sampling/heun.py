"""Heun's second-order method on the probability-flow ODE in sigma space (Karras et al. 2022,
Algorithm 2 without churn; diffusers' HeunDiscreteScheduler).

Step i from sigma_i to sigma_{i+1} (sigma = sqrt((1 - abar_t) / abar_t); 0 after the last step):
  d = (x - D(x; sigma_i)) / sigma_i;  x' = x + (sigma_{i+1} - sigma_i) d
  if sigma_{i+1} > 0:  d' = (x' - D(x'; sigma_{i+1})) / sigma_{i+1};
                       x_{i+1} = x + (sigma_{i+1} - sigma_i) (d + d') / 2
  else (the last step): x_{i+1} = x'
D(x; sigma) is the model's x0 on input x / sqrt(sigma^2 + 1) at that step's timestep, so a run of
n steps calls the model 2n - 1 times (the last step skips its correction with `lax.cond`).
Computed as x' = r x + (1 - r) D(x; sigma_i), r = sigma_{i+1} / sigma_i, and
x_{i+1} = x' + (sigma_{i+1} - sigma_i) / (2 sigma_{i+1}) (D(x; sigma_i) - D(x'; sigma_{i+1})):
the same numbers in exact arithmetic, without float32 cancellation when sigma_i is large.
The start is x_T times diffusers' `init_noise_sigma`, and fractional "linspace" timesteps
interpolate sigma (see `euler.py`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxdiff.sampling.base import Context, Sampler, StepInput
from jaxdiff.sampling.euler import denoise_sigma, euler_predict, scale_initial_noise


def _step(ctx: Context, x, inp: StepInput):
    x_euler, x_vp, x0, sig, sig_next = euler_predict(ctx, x, inp)

    def correct(_):
        # x + dt (d + d') / 2 with d' = d + (x0 - x0') / sigma_next (an identity once x' = x + dt d)
        # is x' + dt / (2 sigma_next) (x0 - x0'): no cancellation of the large state in float32.
        t_next = jnp.maximum(inp.t_next, jnp.zeros((), inp.t_next.dtype))
        _, x0_next = denoise_sigma(ctx, x_euler, t_next, sig_next)
        return (x_euler + (sig_next - sig) / (2.0 * sig_next) * (x0 - x0_next)).astype(x.dtype)

    x_new = jax.lax.cond(inp.k < ctx.num_steps - 1, correct, lambda _: x_euler, None)
    return x_new, x_vp, x0


def _final(ctx: Context, x):
    return x


HEUN = Sampler(init=scale_initial_noise, step=_step, final=_final, stochastic=False, sigma_space=True)
