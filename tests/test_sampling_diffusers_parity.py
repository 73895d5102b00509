"""Every sampler against its diffusers scheduler (the PyTorch original, run here on CPU).

For every method x spacing x number of steps x steps_offset: `timesteps(...)` equals the list
the scheduler's `set_timesteps` makes, and `sample(...)` from the same x_T (and, for DDPM/DDIM,
the same noise) with the same model equals diffusers' StableDiffusionPipeline loop (x_T times
`init_noise_sigma`, then `scale_model_input`, the model, `step` for each of `scheduler.timesteps`).
The model is the exact denoiser of Gaussian data (gaussian_reference.py), one fixed function of
(x, t) evaluated in float64 numpy on the torch side and in float32 JAX on jaxdiff's; at a
fractional timestep it reads its noise level from t the same way on both sides.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
)
from gaussian_reference import eps_model, jax_model, level_np, output_np

from jaxdiff.sampling import DIFFUSERS_DEFAULT_SPACINGS, sample, timesteps
from jaxdiff.schedules import make_schedule

SCHEDULERS = {"ddpm": DDPMScheduler, "ddim": DDIMScheduler,
              "dpmpp_2m": DPMSolverMultistepScheduler, "euler": EulerDiscreteScheduler,
              "heun": HeunDiscreteScheduler}
METHODS = sorted(SCHEDULERS)
SPACINGS = ["leading", "trailing", "linspace"]
NUM_STEPS = [7, 10, 20, 25, 30, 50]
OFFSETS = [0, 1]
BETAS = {"linear": {"beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02},
         "scaled_linear": {"beta_schedule": "scaled_linear", "beta_start": 0.00085,
                           "beta_end": 0.012},
         "cosine": {"beta_schedule": "squaredcos_cap_v2"}}
SHAPE = (2, 3, 3, 2)  # NHWC for jaxdiff; torch gets the NCHW transpose
MU = np.linspace(-0.6, 0.7, 18).reshape(3, 3, 2)
S = 0.5
RTOL = ATOL = 1e-5


def make_scheduler(method, spacing, steps_offset=0, schedule="linear", **config):
    """The diffusers scheduler of `method` with jaxdiff's defaults where diffusers' differ."""
    kwargs = {"num_train_timesteps": 1000, "timestep_spacing": spacing,
              "steps_offset": steps_offset, **BETAS[schedule], **config}
    if method in ("ddpm", "ddim", "heun"):
        kwargs.setdefault("clip_sample", False)  # diffusers' DDPM/DDIM default to True
    if method == "dpmpp_2m":
        kwargs.update(algorithm_type="dpmsolver++", solver_order=2)
    return SCHEDULERS[method](**kwargs)


def diffusers_timesteps(scheduler, method, num_steps):
    """`scheduler.timesteps` after set_timesteps; Heun's list repeats every timestep but the
    first (its second model call), so its distinct noise levels are taken."""
    scheduler.set_timesteps(num_steps)
    ts = scheduler.timesteps.numpy()
    if method == "heun":
        np.testing.assert_array_equal(ts[1::2], ts[2::2])
        ts = np.concatenate([ts[:1], ts[1::2]])
    return ts


def to_nchw(x):
    return np.ascontiguousarray(np.moveaxis(np.asarray(x), -1, 1))


def torch_model(prediction_type, abar, mu=MU, s=S):
    """The Gaussian denoiser as a torch model(x NCHW, t 0-d tensor), evaluated in float64."""
    mu_nchw = np.moveaxis(mu, -1, 0)

    def model(x, t):
        t_np = np.float32(t.item()) if t.is_floating_point() else int(t.item())
        out = output_np(prediction_type, level_np(abar, t_np), x.numpy().astype(np.float64),
                        mu_nchw, s)
        return torch.from_numpy(out).to(x.dtype)

    return model


def run_diffusers(scheduler, num_steps, model, x_T, *, generator=None, eta=0.0, noise=None):
    """StableDiffusionPipeline's denoising loop (float64 input) -> final sample, NHWC numpy."""
    scheduler.set_timesteps(num_steps)
    x = torch.from_numpy(to_nchw(x_T).astype(np.float64)) * scheduler.init_noise_sigma
    for k, t in enumerate(scheduler.timesteps):
        out = model(scheduler.scale_model_input(x, t), t)
        kwargs = {}
        if isinstance(scheduler, DDPMScheduler):
            kwargs["generator"] = generator
        elif isinstance(scheduler, DDIMScheduler) and eta > 0:
            kwargs.update(eta=eta, variance_noise=torch.from_numpy(to_nchw(noise[k])).double())
        x = scheduler.step(out, t, x, **kwargs).prev_sample
    return np.moveaxis(x.numpy(), 1, -1)


def replayed_ddpm_noise(seed, ts):
    """The draws DDPMScheduler.step takes from a generator seeded `seed` (one per step with
    t > 0, float64, model output's NCHW shape), as jaxdiff's per-step noise array (NHWC)."""
    gen = torch.Generator().manual_seed(seed)
    noise = np.zeros((len(ts),) + SHAPE, np.float32)
    nchw = (SHAPE[0], SHAPE[3], SHAPE[1], SHAPE[2])
    for k, t in enumerate(ts):
        if t > 0:
            noise[k] = np.moveaxis(torch.randn(nchw, generator=gen, dtype=torch.float64).numpy(),
                                   1, -1)
    return noise


def compare_run(method, spacing, num_steps, steps_offset=0, *, schedule="linear",
                prediction_type="epsilon", seed=0, mu=MU, s=S, eta=0.0, set_alpha_to_one=True,
                jax_options=None, diffusers_options=None):
    """Runs jaxdiff and diffusers on the same x_T, model and noise; returns (jaxdiff, diffusers)."""
    sched = make_schedule(schedule, 1000)
    abar = np.asarray(sched.alphas_cumprod)
    x_T = np.random.default_rng(seed).standard_normal(SHAPE).astype(np.float32)
    config = dict(diffusers_options or {}, prediction_type=prediction_type)
    if method == "ddim":
        config["set_alpha_to_one"] = set_alpha_to_one
    scheduler = make_scheduler(method, spacing, steps_offset, schedule, **config)
    ts = timesteps(sched, num_steps, spacing, steps_offset, method=method)
    noise = None
    if method == "ddpm":
        noise = replayed_ddpm_noise(seed + 1, ts)
    elif eta > 0:
        noise = np.random.default_rng(seed + 1).standard_normal((num_steps,) + SHAPE)
        noise = noise.astype(np.float32)
    want = run_diffusers(scheduler, num_steps, torch_model(prediction_type, abar, mu, s), x_T,
                         generator=torch.Generator().manual_seed(seed + 1), eta=eta, noise=noise)
    got = sample(jax_model(prediction_type, abar, mu, s), sched, x_T, method=method,
                 num_steps=num_steps, prediction_type=prediction_type, spacing=spacing,
                 steps_offset=steps_offset, eta=eta, noise=noise,
                 set_alpha_to_one=set_alpha_to_one, **(jax_options or {}))
    return np.asarray(got, np.float64), want


@pytest.mark.parametrize("steps_offset", OFFSETS)
@pytest.mark.parametrize("num_steps", NUM_STEPS)
@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("method", METHODS)
def test_timesteps_equal_diffusers_set_timesteps(method, spacing, num_steps, steps_offset):
    want = diffusers_timesteps(make_scheduler(method, spacing, steps_offset), method, num_steps)
    got = timesteps(1000, num_steps, spacing, steps_offset, method=method)
    fractional = method in ("euler", "heun") and spacing == "linspace"
    assert got.dtype == (np.float32 if fractional else np.int32)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("steps_offset", OFFSETS)
@pytest.mark.parametrize("num_steps", NUM_STEPS)
@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("method", METHODS)
def test_samples_equal_diffusers_step_loop(method, spacing, num_steps, steps_offset):
    got, want = compare_run(method, spacing, num_steps, steps_offset)
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("method", METHODS)
def test_model_is_called_with_the_timesteps_diffusers_passes(method, spacing):
    abar = np.asarray(make_schedule("linear", 1000).alphas_cumprod)
    seen_by_diffusers, seen_by_jaxdiff = [], []
    model = torch_model("epsilon", abar)

    def recording_model(x, t):
        seen_by_diffusers.append(t.item())
        return model(x, t)

    x_T = np.random.default_rng(0).standard_normal(SHAPE).astype(np.float32)
    run_diffusers(make_scheduler(method, spacing, 1), 12, recording_model, x_T,
                  generator=torch.Generator().manual_seed(1))

    def jax_recording_model(params, x, t):
        jax.debug.callback(lambda tt: seen_by_jaxdiff.append(np.asarray(tt)), t, ordered=True)
        return eps_model(params, x, t)

    params = {"abar": jnp.asarray(abar), "mu": jnp.asarray(MU, jnp.float32), "s": S}
    sample(jax.tree_util.Partial(jax_recording_model, params), make_schedule("linear", 1000),
           x_T, method=method, num_steps=12, spacing=spacing, steps_offset=1,
           key=jax.random.key(0))
    fractional = method in ("euler", "heun") and spacing == "linspace"
    assert all(t.dtype == (np.float32 if fractional else np.int32) for t in seen_by_jaxdiff)
    assert all(np.all(t == t[0]) for t in seen_by_jaxdiff)  # one timestep per batch
    np.testing.assert_array_equal(np.array([t[0] for t in seen_by_jaxdiff], np.float32),
                                  np.array(seen_by_diffusers, np.float32))


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("method", METHODS)
def test_stable_diffusion_scheduler_config_gives_diffusers_samples(method, prediction_type):
    # What an SD 1.x / 2.x scheduler config sets (v_prediction for SD 2.x 768); the spacing is
    # the one the config's keys leave to the scheduler class.
    got, want = compare_run(method, DIFFUSERS_DEFAULT_SPACINGS[method], 25, 1,
                            schedule="scaled_linear", prediction_type=prediction_type,
                            set_alpha_to_one=False)
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("spacing", SPACINGS)
def test_ddim_with_eta_equals_diffusers_with_the_same_variance_noise(spacing):
    got, want = compare_run("ddim", spacing, 7, 1, eta=0.7, set_alpha_to_one=False)
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


X0_LIMITS = [("ddpm", "clip"), ("ddim", "clip"), ("heun", "clip"), ("ddpm", "threshold"),
             ("ddim", "threshold"), ("dpmpp_2m", "threshold")]


@pytest.mark.parametrize("method,kind", X0_LIMITS)
def test_clipped_or_thresholded_x0_equals_diffusers(method, kind):
    if kind == "clip":
        jax_options = {"clip_sample": True, "clip_sample_range": 0.9}
        diffusers_options = {"clip_sample": True, "clip_sample_range": 0.9}
    else:
        jax_options = {"thresholding": True, "dynamic_thresholding_ratio": 0.8,
                       "clip_sample_range": 1.3}
        diffusers_options = {"thresholding": True, "dynamic_thresholding_ratio": 0.8,
                             "sample_max_value": 1.3}
    spacing = DIFFUSERS_DEFAULT_SPACINGS[method]
    run = {"mu": MU * 2.5, "s": 0.8, "prediction_type": "v_prediction"}
    got, want = compare_run(method, spacing, 10, jax_options=jax_options,
                            diffusers_options=diffusers_options, **run)
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)
    unlimited, _ = compare_run(method, spacing, 10, **run)
    assert np.abs(unlimited - got).max() > 1e-3  # the limit was active in this run


@pytest.mark.parametrize("num_steps", [10, 20])
@pytest.mark.parametrize("method", ["ddpm", "ddim", "dpmpp_2m", "euler"])
def test_cosine_schedule_v_prediction_equals_diffusers(method, num_steps):
    # The digits preset's schedule (diffusers' "squaredcos_cap_v2"): its last alpha-bar is ~1e-9,
    # so Euler's sigmas start near 3e4 and its first step divides by it: float32 holds ~1e-4
    # there against diffusers' float64 loop. (Heun is left out on purpose: its first correction
    # multiplies the difference of two model outputs by sigma_max / (2 sigma_next), ~1500 here,
    # so float32 and float64 differ by ~1e-2 even on this exact denoiser; see README, Samplers.)
    got, want = compare_run(method, "trailing", num_steps, schedule="cosine",
                            prediction_type="v_prediction")
    tolerance = 5e-4 if method == "euler" else ATOL
    np.testing.assert_allclose(got, want, rtol=tolerance, atol=tolerance)
