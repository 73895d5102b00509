"""`sample`: any registered sampler, run as one `lax.scan` inside one jitted function."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff.diffusion import check_prediction_type
from jaxdiff.sampling.base import Context, Sampler, StepInput, make_denoise
from jaxdiff.sampling.checks import (
    check_context,
    check_eta,
    check_guidance,
    check_noise_source,
    check_range,
)
from jaxdiff.sampling.ddim import DDIM
from jaxdiff.sampling.ddpm import DDPM, VARIANCE_TYPES
from jaxdiff.sampling.dpmpp import DPMPP_2M
from jaxdiff.sampling.euler import EULER
from jaxdiff.sampling.flow import FLOW_METHODS, sample_flow
from jaxdiff.sampling.heun import HEUN
from jaxdiff.sampling.spacing import TIMESTEP_RULES, next_timesteps, timesteps
from jaxdiff.schedules import NoiseSchedule
from jaxdiff.validation import InputError, InputTypeError, check_choice, check_images

SAMPLERS: dict[str, Sampler] = {
    "ddpm": DDPM,
    "ddim": DDIM,
    "dpmpp_2m": DPMPP_2M,
    "euler": EULER,
    "heun": HEUN,
}

_STATIC = ("method", "prediction_type", "variance_type", "clip_sample", "thresholding",
           "noise_source", "return_trajectory")


@functools.partial(jax.jit, static_argnames=_STATIC)
def _run(model_fn, schedule, x_T, ts, t_next, leading, set_alpha_to_one, key, noise, eta, labels,
         null_label, guidance_scale, clip_sample_range, dynamic_thresholding_ratio, *, method,
         prediction_type, variance_type, clip_sample, thresholding, noise_source,
         return_trajectory):
    """The compiled sampler. Everything but the keyword-only options is traced."""
    sampler = SAMPLERS[method]
    num_steps = ts.shape[0]
    denoise = make_denoise(
        model_fn, prediction_type, labels=labels, null_label=null_label,
        guidance_scale=guidance_scale, clip_sample=clip_sample,
        clip_sample_range=clip_sample_range, thresholding=thresholding,
        dynamic_thresholding_ratio=dynamic_thresholding_ratio)
    final_alpha_cumprod = jnp.where(set_alpha_to_one, jnp.ones((), jnp.float32),
                                    schedule.alphas_cumprod[0])
    ctx = Context(schedule=schedule, denoise=denoise, num_steps=num_steps, eta=eta,
                  variance_type=variance_type, leading=leading,
                  final_alpha_cumprod=final_alpha_cumprod)
    xs = {"k": jnp.arange(num_steps, dtype=jnp.int32), "t": ts,
          "t_prev": jnp.concatenate([ts[:1], ts[:-1]]), "t_next": t_next, "noise": noise}

    def body(carry, step):
        if noise_source == "array":
            z = step["noise"].astype(x_T.dtype)
        elif noise_source == "key":
            z = jax.random.normal(jax.random.fold_in(key, step["k"]), x_T.shape, x_T.dtype)
        elif noise_source == "keys":  # image i's draws depend on its own key only
            z = jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, step["k"]),
                                                     x_T.shape[1:], x_T.dtype))(key)
        else:
            z = jnp.zeros_like(x_T)
        inp = StepInput(k=step["k"], t=step["t"], t_prev=step["t_prev"], t_next=step["t_next"],
                        noise=z)
        carry, x_vp, pred_x0 = sampler.step(ctx, carry, inp)
        return carry, ((x_vp, pred_x0) if return_trajectory else None)

    carry, ys = jax.lax.scan(body, sampler.init(ctx, x_T, ts[0]), xs)
    x0 = sampler.final(ctx, carry)
    if not return_trajectory:
        return x0
    return x0, {"x_t": ys[0], "pred_x0": ys[1], "timesteps": ts}


def _as_partial(model_fn) -> jax.tree_util.Partial:
    if isinstance(model_fn, jax.tree_util.Partial):
        return model_fn
    if not callable(model_fn):
        raise InputTypeError(
            f"model_fn must be callable as model_fn(x_t, t) (or (x_t, t, labels)); "
            f"got {type(model_fn).__name__}")
    return jax.tree_util.Partial(model_fn)


def sample(model_fn, schedule: NoiseSchedule, x_T, *, method: str, num_steps: int,
           prediction_type: str = "epsilon", spacing: str = "leading", eta=0.0,
           clip_sample: bool = False, key=None, noise=None, return_trajectory: bool = False,
           labels=None, guidance_scale=1.0, null_label=None, variance_type: str = "fixed_small",
           clip_sample_range=1.0, thresholding: bool = False, dynamic_thresholding_ratio=0.995,
           steps_offset: int = 0, set_alpha_to_one: bool = True,
           timestep_rule: str = "diffusers", context=None, null_context=None,
           shift: float = 1.0, mu: float | None = None):
    """Generates images from noise x_T with `num_steps` steps of a sampler.

    Flow-matching models (velocity output) take the methods "flow_euler" and "flow_heun"
    (`jaxdiff.sampling.flow.sample_flow`, with `shift` / `mu`; the schedule and the DDPM-family
    options are then not used).

    By default every method visits the timesteps of its diffusers scheduler for the same
    `spacing` and `steps_offset` and steps where that scheduler steps (see
    `jaxdiff.sampling.spacing`), so with the same model, x_T and noise the result equals
    diffusers' to float32 precision: DDPMScheduler, DDIMScheduler, DPMSolverMultistepScheduler
    (dpmsolver++, order 2, midpoint, lower_order_final, final_sigmas_type "zero"),
    EulerDiscreteScheduler, HeunDiscreteScheduler. The scheduler options Stable Diffusion folders
    set map onto arguments: `timestep_spacing` -> spacing (diffusers' class defaults, which a
    config without the key gets, are `spacing.DIFFUSERS_DEFAULT_SPACINGS`), `steps_offset`,
    `prediction_type`, `clip_sample`, `clip_sample_range`, `thresholding`,
    `dynamic_thresholding_ratio`, `sample_max_value` -> clip_sample_range with thresholding,
    `set_alpha_to_one` (DDIM), `variance_type` (DDPM); `beta_schedule` "scaled_linear" /
    `rescale_betas_zero_snr` are the schedule's (`make_schedule("scaled_linear",
    rescale_to_zero_terminal_snr=...)`).

    The whole loop is one `jax.lax.scan` in one jitted function, compiled once per (x_T shape and
    dtype, method, num_steps, prediction_type, variance_type (ddpm), clip_sample, thresholding,
    noise source, labels or not, return_trajectory, the model function, the timesteps' dtype:
    float32 for the fractional euler/heun "linspace") and reused. All arrays and numbers
    (schedule, timesteps hence spacing, steps_offset and timestep_rule, set_alpha_to_one, eta,
    guidance_scale, null_label, clip_sample_range, dynamic_thresholding_ratio, key, noise,
    labels) are traced: changing them does not recompile. The model function is a pytree: pass
    `jax.tree_util.Partial(apply_fn, params)` to reuse the compiled sampler across parameter
    updates (params are traced leaves); any other callable is wrapped in `Partial(model_fn)` and
    compiled per callable object (a new lambda each call recompiles). `sample` also works under
    an outer `jax.jit`.

    Args:
      model_fn: `model_fn(x_t, t) -> output` (or `model_fn(x_t, t, labels)` with labels), any
        JAX callable; x_t (B, H, W, C), t (B,) int32, or float32 for the fractional "linspace"
        timesteps of euler/heun (as diffusers); output of x_t's shape in the parameterisation
        `prediction_type`.
      schedule: the NoiseSchedule the model was trained with.
      x_T: standard normal noise, float NHWC (B, H, W, C). Euler and Heun multiply it by the
        initial sigma themselves, as the diffusers pipelines do (`init_noise_sigma`).
      method: "ddpm", "ddim", "dpmpp_2m", "euler" or "heun" (registry `SAMPLERS`).
      num_steps: number of steps n, an int in [1, T].
      prediction_type: "epsilon", "sample" (x0) or "v_prediction".
      spacing: "leading", "trailing" or "linspace": the list `timesteps(schedule, num_steps,
        spacing, steps_offset, method=method, rule=timestep_rule)`. "leading" is jaxdiff's
        default for every method; diffusers' default is "linspace" for dpmpp_2m, euler, heun.
      eta: DDIM's eta >= 0 (0 deterministic, 1 the DDPM variance); traced; other methods ignore
        it.
      clip_sample: clip the predicted x0 to [-clip_sample_range, clip_sample_range].
      key: a `jax.random.key`; step k draws `normal(fold_in(key, k))`. Or one typed key per
        image, shape (B,): image i's step k draws `normal(fold_in(key[i], k))`, so an image's
        noise does not depend on the batch it is in.
      noise: instead of key, the draws themselves, shape (num_steps, *x_T.shape); noise[k] is
        step k's standard normal draw (k = 0 first); a step that adds no noise ignores it.
        "ddpm" needs key or noise; "ddim" needs one unless eta is a concrete 0; the ODE methods
        (dpmpp_2m, euler, heun, ddim with eta 0) ignore them.
      return_trajectory: also return the per-step trajectory (see Returns).
      labels: int32 (B,) class labels in [0, null_label] for classifier-free guidance; each step
        then calls the model once on the doubled batch (x, x), (t, t), (labels, null_label).
      guidance_scale: g in uncond + g (cond - uncond) (applied to the model output); traced.
        Must be 1 without labels.
      null_label: the "no label" class index the model was trained with; required with labels.
      context, null_context: instead of labels, conditioning arrays of one shape (B, ...), rank
        >= 2, e.g. text states (B, tokens, dim) of the prompts and of the empty (or negative)
        prompts; each step calls `model_fn(x_t, t, states)` once on the doubled batch
        (x, x), (t, t), (context, null_context) and mixes the outputs with `guidance_scale`
        (traced, like the states).
      variance_type: DDPM's "fixed_small" (posterior variance) or "fixed_large" (beta).
      clip_sample_range: the clip bound, and with `thresholding` the largest threshold s
        (diffusers' `sample_max_value`).
      thresholding: Imagen dynamic thresholding of x0 (see `base.threshold`); replaces clipping.
      dynamic_thresholding_ratio: the quantile of |x0| used as threshold, in (0, 1].
      steps_offset: added to "leading" timesteps (diffusers' `steps_offset`, 1 in Stable
        Diffusion folders); the other spacings ignore it, as in diffusers.
      set_alpha_to_one: DDIM only (as diffusers' DDIMScheduler): a step to below t = 0 goes to
        alphas_cumprod = 1 (True) or to alphas_cumprod[0] (False, as Stable Diffusion folders
        set); traced. The other methods end at the clean image (alphas_cumprod 1, sigma 0).
      timestep_rule: "diffusers" (each method's scheduler's list and step targets) or "shared"
        (every method visits the DDIM/DDPM integer list of `spacing` and steps from each listed
        timestep to the next: one set of noise levels for all methods, and DDIM steps aligned
        with its list for every spacing).

    Returns:
      x_0 of x_T's shape (float32 unless x_T is float64), or with return_trajectory a pair
      (x_0, trajectory) where trajectory is a dict of stacked arrays:
        "x_t": (num_steps, *x_T.shape), the state before step k in the variance-preserving
          scale of q(x_t | x_0) (the model's input; for euler/heun the sigma-space state divided
          by sqrt(sigma^2 + 1));
        "pred_x0": (num_steps, *x_T.shape), the predicted x0 at step k after guidance, clipping
          and thresholding (for heun, that of the step's first model call);
        "timesteps": (num_steps,), the timestep of step k as the model saw it (int32; float32
          for the fractional "linspace" lists of euler/heun).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxdiff.schedules import make_schedule
      >>> sched = make_schedule("linear")
      >>> eps_model = lambda x, t: 0.9 * x             # any JAX callable
      >>> x_T = jax.random.normal(jax.random.key(0), (4, 8, 8, 1))
      >>> x0 = sample(eps_model, sched, x_T, method="dpmpp_2m", num_steps=20)
      >>> x0.shape, x0.dtype
      ((4, 8, 8, 1), dtype('float32'))
      >>> # with a Flax model, reuse one compilation across parameter updates:
      >>> # sample(jax.tree_util.Partial(unet.apply, params), sched, x_T, method="ddpm",
      >>> #        num_steps=1000, key=jax.random.key(1))

    References:
      Ho et al. 2020 (DDPM); Song et al. 2021 (DDIM); Lu et al. 2022 (DPM-Solver++);
      Karras et al. 2022 (Euler, Heun); Ho & Salimans 2022 (classifier-free guidance);
      Saharia et al. 2022 (dynamic thresholding); Lin et al. 2024 (spacings, zero terminal SNR).
    """
    if method in FLOW_METHODS:
        if context is not None:
            raise InputError("flow samplers take class labels for guidance, not context states")
        return sample_flow(model_fn, x_T, method=method, num_steps=num_steps, shift=shift, mu=mu,
                           labels=labels, null_label=null_label, guidance_scale=guidance_scale,
                           return_trajectory=return_trajectory)
    check_choice("sampler", method, (*SAMPLERS, *FLOW_METHODS))
    check_prediction_type(prediction_type)
    check_choice("variance_type", variance_type, VARIANCE_TYPES)
    if not isinstance(schedule, NoiseSchedule):
        raise InputTypeError(
            f"schedule must be a NoiseSchedule (jaxdiff.schedules.make_schedule); got "
            f"{type(schedule).__name__}")
    check_choice("timestep_rule", timestep_rule, TIMESTEP_RULES)
    ts = timesteps(schedule, num_steps, spacing, steps_offset, method=method, rule=timestep_rule)
    t_next = next_timesteps(ts, schedule.num_timesteps, method, timestep_rule)
    check_images(x_T, "x_T")
    fn = _as_partial(model_fn)
    for flag, name in ((clip_sample, "clip_sample"), (thresholding, "thresholding"),
                       (return_trajectory, "return_trajectory"),
                       (set_alpha_to_one, "set_alpha_to_one")):
        if not isinstance(flag, (bool, np.bool_)):
            raise InputTypeError(f"{name} must be True or False; got {flag!r}")
    eta_value = check_eta(eta)
    sampler = SAMPLERS[method]
    source = check_noise_source(method, sampler.stochastic, eta_value, key, noise,
                                tuple(x_T.shape), num_steps)
    if not sampler.stochastic:
        source = "none"  # checked, then ignored: the ODE samplers draw nothing
    if context is not None or null_context is not None:
        if labels is not None or null_label is not None:
            raise InputError("give labels and null_label (class labels) or context and "
                             "null_context (conditioning states), not both")
        check_context(context, null_context, guidance_scale, x_T.shape[0])
        guided = True
        cond = jnp.asarray(context)
        uncond = jnp.asarray(null_context, cond.dtype)
    else:
        guided = check_guidance(labels, null_label, guidance_scale, x_T.shape[0])
        cond = jnp.asarray(labels, jnp.int32) if guided else None
        uncond = jnp.asarray(null_label, jnp.int32) if guided else None
    check_range(clip_sample_range, "clip_sample_range", 0.0, low_open=True)
    check_range(dynamic_thresholding_ratio, "dynamic_thresholding_ratio", 0.0, 1.0,
                low_open=True)
    if thresholding:
        check_range(clip_sample_range, "clip_sample_range (the threshold's upper bound)", 1.0)
    dtype = jax.dtypes.canonicalize_dtype(jnp.promote_types(x_T.dtype, jnp.float32))
    f32 = functools.partial(jnp.asarray, dtype=jnp.float32)
    return _run(fn, schedule, jnp.asarray(x_T, dtype), jnp.asarray(ts), jnp.asarray(t_next),
                jnp.asarray(spacing == "leading"),
                jnp.asarray(bool(set_alpha_to_one) or method != "ddim"),
                key if source in ("key", "keys") else None,
                noise if source == "array" else None,
                f32(eta), cond, uncond, f32(guidance_scale) if guided else None, f32(clip_sample_range),
                f32(dynamic_thresholding_ratio), method=method,
                prediction_type=prediction_type,
                variance_type=variance_type if method == "ddpm" else "fixed_small",
                clip_sample=bool(clip_sample), thresholding=bool(thresholding),
                noise_source=source, return_trajectory=bool(return_trajectory))
