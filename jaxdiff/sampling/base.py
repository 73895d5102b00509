"""What every sampler shares: the step interface, the denoiser (guidance, parameterisation,
clipping, thresholding) and the discrete sigmas of the sigma-space methods.

A sampler is a `Sampler` of pure functions. Its `step` gets a
`denoise(x, t, alpha, sigma) -> (x0, eps)` function that hides the model, classifier-free
guidance, the prediction type and clipping, so each update rule is written once, on (x0, eps)
(k-diffusion's Denoiser wrapper). The step says at which noise level x = alpha x0 + sigma eps the
model's output is read: a table entry for DDPM/DDIM, the (possibly interpolated) Karras sigma for
the sigma-space methods.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax.numpy as jnp

from jaxdiff.schedules import NoiseSchedule

Denoise = Callable[[jnp.ndarray, jnp.ndarray, jnp.ndarray, jnp.ndarray],
                   tuple[jnp.ndarray, jnp.ndarray]]

# diffusers' Euler/Heun/DPM-Solver schedulers replace a zero alphas_cumprod (zero terminal SNR)
# with 2**-24, "close to 0 without being 0 so first sigma is not inf".
ZERO_SNR_ALPHA_CUMPROD = 2.0 ** -24


class StepInput(NamedTuple):
    """What the scan feeds step k (all scalars except noise).

    k: int32 step index, 0 first. t: timestep of step k, the model's `t` (int32, or float32 for
    the fractional Euler/Heun lists). t_prev: timestep of step k-1 (t itself at k = 0). t_next:
    the timestep step k goes to (`spacing.next_timesteps`); -1 means the clean image
    (alphas_cumprod = 1, or the run's final_alpha_cumprod for DDIM; sigma = 0). noise: standard
    normal draw for step k, shape of x (zeros when the run has no noise source).
    """

    k: jnp.ndarray
    t: jnp.ndarray
    t_prev: jnp.ndarray
    t_next: jnp.ndarray
    noise: jnp.ndarray


class Context(NamedTuple):
    """Run-wide values a step may read.

    schedule: the NoiseSchedule. denoise: (x_vp, t, alpha, sigma) -> (x0, eps), see
    `make_denoise`. num_steps: static int. eta: traced float (DDIM). variance_type: static str
    (DDPM). leading: traced bool, whether the spacing is "leading" (Euler/Heun initial sigma
    rule). final_alpha_cumprod: traced float, alphas_cumprod of the clean image that DDIM's last
    step goes to (1, or alphas_cumprod[0] for diffusers' `set_alpha_to_one=False`).
    """

    schedule: NoiseSchedule
    denoise: Denoise
    num_steps: int
    eta: jnp.ndarray
    variance_type: str
    leading: jnp.ndarray
    final_alpha_cumprod: jnp.ndarray | float = 1.0


class Sampler(NamedTuple):
    """A sampler: `init(ctx, x_T, t_0) -> carry`; `step(ctx, carry, StepInput) -> (carry, x_vp,
    pred_x0)` (x_vp the state before the step in the variance-preserving scale, pred_x0 the
    denoiser's x0 there); `final(ctx, carry) -> x_0`. `stochastic` says whether it draws noise;
    `sigma_space` that it works on sigma = sqrt((1 - abar) / abar), interpolated between the
    table's entries at fractional timesteps (zero terminal SNR handled as in diffusers).
    """

    init: Callable[[Context, jnp.ndarray, jnp.ndarray], Any]
    step: Callable[[Context, Any, StepInput], tuple[Any, jnp.ndarray, jnp.ndarray]]
    final: Callable[[Context, Any], jnp.ndarray]
    stochastic: bool
    sigma_space: bool = False


def alpha_cumprod_at(schedule: NoiseSchedule, t: jnp.ndarray, final=1.0) -> jnp.ndarray:
    """alphas_cumprod[t] for an integer timestep, `final` for t < 0 (the clean image)."""
    safe = jnp.maximum(t, 0)
    return jnp.where(t >= 0, schedule.alphas_cumprod[safe],
                     jnp.asarray(final, schedule.alphas_cumprod.dtype))


def vp_coefficients(alpha_cumprod: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """(alpha, sigma) = (sqrt(abar), sqrt(1 - abar)) of x_vp = alpha x0 + sigma eps."""
    return jnp.sqrt(alpha_cumprod), jnp.sqrt(1.0 - alpha_cumprod)


def sigma_space_alpha_cumprod(schedule: NoiseSchedule) -> jnp.ndarray:
    """alphas_cumprod with an exact 0 (zero terminal SNR) replaced by 2**-24, as diffusers."""
    ac = schedule.alphas_cumprod
    return jnp.where(ac == 0, jnp.asarray(ZERO_SNR_ALPHA_CUMPROD, ac.dtype), ac)


def sigma_at(schedule: NoiseSchedule, t: jnp.ndarray) -> jnp.ndarray:
    """Karras sigma = sqrt((1 - abar_t) / abar_t) at timestep t; 0 for t < 0.

    An integer t reads the table; a float t is interpolated linearly between its neighbours
    (diffusers' Euler/Heun `np.interp` of the sigmas), so whole-number floats read the table too.
    """
    ac = sigma_space_alpha_cumprod(schedule)
    table = jnp.sqrt((1.0 - ac) / ac)
    if jnp.issubdtype(t.dtype, jnp.integer):
        sig = table[jnp.maximum(t, 0)]
    else:
        sig = jnp.interp(t, jnp.arange(table.shape[0], dtype=t.dtype), table)
    return jnp.where(t >= 0, sig, jnp.zeros((), sig.dtype))


def sigma_to_vp(sig: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """(alpha, sigma) of the variance-preserving scale for Karras sigma `sig`: alpha = 1 /
    sqrt(sig^2 + 1), sigma = sig alpha; sig = 0 gives (1, 0)."""
    alpha = 1.0 / jnp.sqrt(sig ** 2 + 1.0)
    return alpha, sig * alpha


def threshold(x0: jnp.ndarray, ratio: jnp.ndarray, max_value: jnp.ndarray) -> jnp.ndarray:
    """Dynamic thresholding (Saharia et al. 2022, Imagen, sec. 2.3; diffusers `_threshold_sample`).

    Per image, s = the `ratio` quantile of |x0| clamped to [1, max_value]; x0 is clipped to
    [-s, s] and divided by s. With max_value = 1 this is plain clipping to [-1, 1].

    Args:
      x0: predicted clean images (B, H, W, C).
      ratio: quantile in (0, 1], e.g. 0.995.
      max_value: the largest s allowed (diffusers' `sample_max_value`), >= 1.

    Returns:
      Thresholded x0, same shape.
    """
    flat = jnp.abs(x0.reshape(x0.shape[0], -1)).astype(jnp.float32)
    s = jnp.quantile(flat, ratio, axis=1)
    s = jnp.clip(s, 1.0, max_value).reshape((-1,) + (1,) * (x0.ndim - 1))
    return (jnp.clip(x0, -s, s) / s).astype(x0.dtype)


def x0_and_eps(x, model_output, alpha, sigma, prediction_type: str):
    """(x0, eps) from a model output at the noise level x = alpha x0 + sigma eps.

    The same conversions as `jaxdiff.diffusion.to_x0_and_eps` (DDPM eq. 4 solved for x0;
    v = alpha eps - sigma x0, Salimans & Ho 2022), written on the level (alpha, sigma) instead of
    a table index, because Euler/Heun evaluate the model between the table's entries.
    """
    if prediction_type == "epsilon":
        return (x - sigma * model_output) / alpha, model_output
    if prediction_type == "sample":
        return model_output, (x - alpha * model_output) / sigma
    return alpha * x - sigma * model_output, alpha * model_output + sigma * x


def make_denoise(model_fn, prediction_type: str, *, labels=None, null_label=None,
                 guidance_scale=None, clip_sample: bool = False, clip_sample_range=1.0,
                 thresholding: bool = False, dynamic_thresholding_ratio=0.995) -> Denoise:
    """Builds denoise(x_vp, t, alpha, sigma) -> (x0, eps) for one run.

    The model is called on (x_vp, t) with t broadcast to (batch,) in its own dtype (int32, or
    float32 for fractional timesteps), and its output read at the noise level
    x_vp = alpha x0 + sigma eps (see `x0_and_eps`). With `labels`, the model is called once on
    the doubled batch (x, x), (t, t), (labels, null_label) and its output combined as
    uncond + g * (cond - uncond) (Ho & Salimans 2022, eq. 6, written on the model output whatever
    its parameterisation, as the diffusers pipelines do). `labels` are int class labels (B,) with
    a scalar `null_label` (broadcast), or a conditioning array (B, ...) of rank >= 2 such as text
    states (B, tokens, D) with `null_label` an array of the same shape (per-example unconditional
    states: the empty or the negative prompt's). Then x0 (not eps, as in diffusers) is
    thresholded (if `thresholding`) or else clipped to [-clip_sample_range, clip_sample_range]
    (if `clip_sample`).
    """

    if labels is not None:
        # a per-example unconditional input (text states of the empty or negative prompt) is
        # used as it is; a class index is broadcast over the batch
        per_example = jnp.shape(null_label) == jnp.shape(labels) and jnp.ndim(labels) > 1
        unconditional = null_label if per_example else jnp.full_like(labels, null_label)

    def denoise(x, t, alpha, sigma):
        tb = jnp.full((x.shape[0],), t, t.dtype)
        if labels is None:
            out = model_fn(x, tb)
        else:
            both = model_fn(jnp.concatenate([x, x]), jnp.concatenate([tb, tb]),
                            jnp.concatenate([labels, unconditional]))
            cond, uncond = jnp.split(both, 2)
            out = uncond + guidance_scale * (cond - uncond)
        out = out.astype(x.dtype)
        x0, eps = x0_and_eps(x, out, alpha.astype(x.dtype), sigma.astype(x.dtype),
                             prediction_type)
        if thresholding:
            x0 = threshold(x0, dynamic_thresholding_ratio, clip_sample_range)
        elif clip_sample:
            x0 = jnp.clip(x0, -clip_sample_range, clip_sample_range)
        return x0, eps

    return denoise
