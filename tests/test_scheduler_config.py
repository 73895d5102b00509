"""Scheduler configs of diffusers folders -> jaxdiff sampler settings, checked by running the
diffusers scheduler built from the same dict (`<Scheduler>.from_config`, what `from_pretrained`
does with the folder's file) against `jaxdiff.sampling.sample` with a toy model."""

from __future__ import annotations

import diffusers
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxdiff.pipelines.scheduler_config import METHOD_CLASSES, sampler_settings
from jaxdiff.sampling import sample
from jaxdiff.validation import InputError

# scheduler/scheduler_config.json of an SD 1.x folder (no timestep_spacing, no prediction_type)
SD1 = {"_class_name": "PNDMScheduler", "_diffusers_version": "0.6.0", "beta_end": 0.012,
       "beta_schedule": "scaled_linear", "beta_start": 0.00085, "num_train_timesteps": 1000,
       "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1,
       "trained_betas": None, "clip_sample": False}
# ... and of an SD 2.x 768 folder
SD2 = dict(SD1, _class_name="DDIMScheduler", prediction_type="v_prediction")
X_T = np.random.default_rng(0).standard_normal((2, 4, 4, 3)).astype(np.float32)


def toy_model_np(x, t):
    return 0.8 * x + 0.1 * np.sin(x) + 2e-4 * t


def toy_model_jax(x, t):
    return 0.8 * x + 0.1 * jnp.sin(x) + 2e-4 * t[:, None, None, None].astype(x.dtype)


def diffusers_run(config: dict, method: str, num_steps: int) -> np.ndarray:
    scheduler = getattr(diffusers, METHOD_CLASSES[method]).from_config(config)
    scheduler.set_timesteps(num_steps)
    x = torch.from_numpy(X_T).double() * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        inp = scheduler.scale_model_input(x, t)
        out = torch.from_numpy(toy_model_np(inp.numpy(), float(t)))
        x = scheduler.step(out, t, x).prev_sample
    return x.numpy()


def jaxdiff_run(config: dict, method: str | None, num_steps: int) -> np.ndarray:
    s = sampler_settings(config, method)
    return np.asarray(sample(toy_model_jax, s.schedule, jnp.asarray(X_T), method=s.method,
                             num_steps=num_steps, **s.options))


@pytest.mark.parametrize("method", ["ddim", "dpmpp_2m", "euler", "heun"])
@pytest.mark.parametrize("config", [SD1, SD2], ids=["sd1", "sd2"])
def test_method_swapped_in_from_folder_config_steps_as_diffusers(config, method):
    want = diffusers_run(config, method, 10)
    np.testing.assert_allclose(jaxdiff_run(config, method, 10), want, atol=2e-5, rtol=1e-5)


def test_sd1_class_defaults_fill_what_the_file_does_not_name():
    assert sampler_settings(SD1, "ddim").options["spacing"] == "leading"
    assert sampler_settings(SD1, "dpmpp_2m").options["spacing"] == "linspace"
    assert sampler_settings(SD1, "euler").options["spacing"] == "linspace"
    no_clip_key = {k: v for k, v in SD1.items() if k != "clip_sample"}
    assert sampler_settings(no_clip_key, "ddim").options["clip_sample"] is True
    assert sampler_settings(SD2).options["prediction_type"] == "v_prediction"


def test_ddim_clip_sample_default_true_matches_diffusers():
    config = {k: v for k, v in SD1.items() if k != "clip_sample"}
    np.testing.assert_allclose(jaxdiff_run(config, "ddim", 8), diffusers_run(config, "ddim", 8),
                               atol=2e-5, rtol=1e-5)


def test_pndm_folder_defaults_to_dpmpp_2m_and_says_so():
    s = sampler_settings(SD1)
    assert s.method == "dpmpp_2m" and "PNDMScheduler" in s.note and "dpmpp_2m" in s.note
    assert sampler_settings(SD2).note is None and sampler_settings(SD2).method == "ddim"


def test_dpmpp_no_effect_keys_are_accepted_and_match_diffusers():
    # order 2 with final sigma 0 takes a first-order last step whatever these say
    config = dict(SD1, _class_name="DPMSolverMultistepScheduler", euler_at_final=True,
                  lower_order_final=False, timestep_spacing="trailing")
    np.testing.assert_allclose(jaxdiff_run(config, None, 7), diffusers_run(config, "dpmpp_2m", 7),
                               atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("cls,key,value", [
    ("EulerDiscreteScheduler", "use_karras_sigmas", True),
    ("DPMSolverMultistepScheduler", "use_karras_sigmas", True),
    ("DPMSolverMultistepScheduler", "final_sigmas_type", "sigma_min"),
    ("EulerDiscreteScheduler", "final_sigmas_type", "sigma_min"),
    ("DPMSolverMultistepScheduler", "solver_type", "heun"),
    ("DPMSolverMultistepScheduler", "algorithm_type", "dpmsolver"),
    ("DPMSolverMultistepScheduler", "solver_order", 3),
    ("EulerDiscreteScheduler", "interpolation_type", "log_linear"),
    ("EulerDiscreteScheduler", "timestep_type", "continuous"),
    ("DDPMScheduler", "variance_type", "learned_range"),
    ("DDIMScheduler", "beta_schedule", "sigmoid"),
    ("DDIMScheduler", "timestep_spacing", "karras"),
])
def test_unsupported_value_is_refused_naming_key_and_accepted(cls, key, value):
    with pytest.raises(InputError, match=f"{key}={value!r}.*accepted"):
        sampler_settings(dict(SD1, _class_name=cls, **{key: value}))


def test_key_of_another_class_is_ignored_as_diffusers_does():
    # DDIMScheduler.from_pretrained ignores Euler's use_karras_sigmas
    s = sampler_settings(dict(SD1, _class_name="EulerDiscreteScheduler", use_karras_sigmas=True),
                         "ddim")
    assert s.method == "ddim"


def test_not_a_scheduler_config_is_refused():
    with pytest.raises(InputError, match="not a diffusers scheduler config"):
        sampler_settings({"_class_name": "UNet2DConditionModel"})
