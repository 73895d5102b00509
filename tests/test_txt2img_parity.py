"""Text to image against diffusers' StableDiffusionPipeline on the same tiny random folder.

Same prompts, same initial latents, same scheduler settings (the scheduler swapped in from the
folder's config with `<Scheduler>.from_pretrained(folder/scheduler)`, as a diffusers user does):
the decoded images (diffusers' output_type="np" in [0, 1], mapped to [-1, 1]) agree to 1e-4.
"""

from __future__ import annotations

import functools

import jax
import numpy as np
import pytest
import torch
from sd_pipeline_cache import tiny_pipeline

from jaxdiff.pipelines.loading import load_text_to_image
from jaxdiff.pipelines.text_to_image import generate

PROMPTS = ["a red circle left of a blue square", "an astronaut riding a horse, oil painting!"]
NEGATIVE = "blurry, low quality"
SIZE = 32  # pixels; latents 8x8 with the tiny 4x autoencoder
STEPS = 4
LATENTS = np.random.default_rng(0).standard_normal((2, SIZE // 4, SIZE // 4, 4)).astype(np.float32)
ATOL = 1e-4


@functools.cache
def _diffusers_pipeline(folder, scheduler):
    from fixtures.tiny_sd_pipeline import load_diffusers_pipeline

    return load_diffusers_pipeline(folder, scheduler)


@functools.cache
def diffusers_images(folder, scheduler, prompts: tuple, negative, guidance, steps=STEPS):
    """diffusers' images for LATENTS, mapped to [-1, 1] (cached: the CLI test reuses them)."""
    pipe = _diffusers_pipeline(folder, scheduler)
    negative = None if negative is None else [negative] * len(prompts)
    with torch.no_grad():
        out = pipe(prompt=list(prompts), negative_prompt=negative, num_inference_steps=steps,
                   guidance_scale=guidance, height=SIZE, width=SIZE, output_type="np",
                   latents=torch.from_numpy(LATENTS.transpose(0, 3, 1, 2).copy()))
    return out.images * 2.0 - 1.0


@pytest.fixture(scope="module")
def sd1():
    return load_text_to_image(tiny_pipeline("sd1"))


@pytest.mark.parametrize("guidance,negative", [(1.0, None), (7.5, None), (7.5, NEGATIVE)],
                         ids=["g1", "g7.5", "g7.5-negative"])
@pytest.mark.parametrize("method", ["ddim", "euler", "dpmpp_2m"])
def test_images_equal_diffusers_pipeline(sd1, method, guidance, negative):
    want = diffusers_images(tiny_pipeline("sd1"), method, tuple(PROMPTS), negative, guidance)
    got = generate(sd1, PROMPTS, negative, num_steps=STEPS, method=method,
                   guidance_scale=guidance, height=SIZE, width=SIZE, latents=LATENTS)
    assert got.shape == want.shape == (2, SIZE, SIZE, 3)
    np.testing.assert_allclose(got, want, atol=ATOL, rtol=0)


def test_sd2_v_prediction_folder_equals_diffusers_pipeline():
    folder = tiny_pipeline("sd2")
    model = load_text_to_image(folder)
    assert model.sampler.method == "ddim" and model.sampler.prediction_type == "v_prediction"
    want = diffusers_images(folder, None, tuple(PROMPTS), NEGATIVE, 7.5)
    got = generate(model, PROMPTS, NEGATIVE, num_steps=STEPS, guidance_scale=7.5, height=SIZE,
                   width=SIZE, latents=LATENTS)
    np.testing.assert_allclose(got, want, atol=ATOL, rtol=0)


@pytest.mark.parametrize("max_pixels", [4096, 128], ids=["all-winograd", "mixed"])
def test_winograd_convolutions_equal_diffusers_pipeline(monkeypatch, max_pixels):
    """The CPU's Winograd convolutions (on by default only from 64 channels, so the tiny
    folder's 8-32 channel networks take them only here), all of them or, with 128 positions at
    most, the 4x4 latents and 8x8 images while larger inputs take the direct path."""
    from jaxdiff.models import winograd
    from jaxdiff.pipelines import text_to_image

    monkeypatch.setattr(winograd, "MIN_CHANNELS", 1)
    monkeypatch.setattr(winograd, "MAX_PIXELS", max_pixels)
    text_to_image._generate.clear_cache()  # MAX_PIXELS is read when the program is traced
    try:
        model = load_text_to_image(tiny_pipeline("sd1"), winograd=True)
        kernels = [v for p, v in jax.tree_util.tree_flatten_with_path(model.params)[0]
                   if jax.tree_util.keystr(p).endswith("['kernel']")]
        assert sum(k.ndim == 3 for k in kernels) >= 20
        want = diffusers_images(tiny_pipeline("sd1"), "dpmpp_2m", tuple(PROMPTS), NEGATIVE, 7.5)
        got = generate(model, PROMPTS, NEGATIVE, num_steps=STEPS, method="dpmpp_2m",
                       guidance_scale=7.5, height=SIZE, width=SIZE, latents=LATENTS)
    finally:
        text_to_image._generate.clear_cache()
    np.testing.assert_allclose(got, want, atol=ATOL, rtol=0)


class CompileCounter:
    """Counts XLA backend compilations while active."""

    EVENT = "/jax/core/compile/backend_compile_duration"

    def __init__(self):
        self.count = 0

    def __call__(self, event, duration, **kwargs):
        if event == self.EVENT:
            self.count += 1

    def __enter__(self):
        jax.monitoring.register_event_duration_secs_listener(self)
        return self

    def __exit__(self, *exc):
        jax.monitoring.unregister_event_duration_listener(self)


def test_other_prompts_seeds_guidance_and_latents_compile_nothing(sd1):
    run = {"num_steps": STEPS, "method": "ddim", "height": SIZE, "width": SIZE}
    generate(sd1, PROMPTS, key=3, guidance_scale=7.5, **run)
    with CompileCounter() as again:
        generate(sd1, ["a green triangle", "a cat"], ["dark", "grainy"], key=123,
                 guidance_scale=3.0, **run)
        generate(sd1, PROMPTS, latents=LATENTS, guidance_scale=1.0, **run)
    assert again.count == 0
    with CompileCounter() as new_shape:
        generate(sd1, PROMPTS, key=3, batch_size=1, **run)
    assert new_shape.count == 1  # the whole generation is one compiled function


def test_noise_of_image_i_depends_only_on_seed_and_i(sd1):
    run = {"num_steps": STEPS, "method": "ddim", "height": SIZE, "width": SIZE, "key": 3}
    together = generate(sd1, PROMPTS, **run)
    one_by_one = generate(sd1, PROMPTS, batch_size=1, **run)
    second_alone = generate(sd1, PROMPTS[1:], first_index=1, **run)
    np.testing.assert_allclose(one_by_one, together, atol=1e-5)
    np.testing.assert_allclose(second_alone, together[1:], atol=1e-5)
    other_seed = generate(sd1, PROMPTS, **dict(run, key=4))
    assert np.abs(other_seed - together).max() > 1e-2
