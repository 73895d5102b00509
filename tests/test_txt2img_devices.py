"""`jaxdiff txt2img` with the batch split over two devices (host devices in a subprocess).

The images must be diffusers' StableDiffusionPipeline images for the initial latents that the
documented rule draws (image i from normal(fold_in(fold_in(key(seed), i), 0))), computed here
in the test, whatever the number of devices and with a batch that does not divide evenly.
"""

from __future__ import annotations

import os
import subprocess
import sys

import jax
import numpy as np
from sd_pipeline_cache import tiny_pipeline
from test_txt2img_parity import SIZE, STEPS, _diffusers_pipeline

PROMPTS = ["a red circle left of a blue square", "a green triangle", "a yellow square"]
SEED = 11


def documented_latents(seed: int, num: int) -> np.ndarray:
    key = jax.random.key(seed)
    return np.stack([np.asarray(jax.random.normal(
        jax.random.fold_in(jax.random.fold_in(key, i), 0), (SIZE // 4, SIZE // 4, 4)))
        for i in range(num)])


def test_two_devices_split_the_batch_and_equal_diffusers(tmp_path):
    import torch

    folder = tiny_pipeline("sd1")
    prompts_file, npz = tmp_path / "prompts.txt", tmp_path / "images.npz"
    prompts_file.write_text("\n".join(PROMPTS) + "\n")
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS="--xla_force_host_platform_device_count=2")
    code = ("import jax, sys; from jaxdiff.cli import main; assert jax.local_device_count() == 2;"
            " sys.exit(main(sys.argv[1:]))")
    done = subprocess.run(
        [sys.executable, "-c", code, "txt2img", "--pretrained", str(folder), "--prompts_file",
         str(prompts_file), "--method", "ddim", "--steps", str(STEPS), "--guidance", "7.5",
         "--height", str(SIZE), "--width", str(SIZE), "--seed", str(SEED), "--batch", "4",
         "--npz", str(npz), "--out", str(tmp_path / "grid.png")],
        env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    with np.load(npz, allow_pickle=False) as saved:
        images, prompts = saved["images"], saved["prompts"]
    assert prompts.tolist() == PROMPTS and images.shape == (3, SIZE, SIZE, 3)

    latents = documented_latents(SEED, len(PROMPTS))
    with torch.no_grad():
        want = _diffusers_pipeline(folder, "ddim")(
            prompt=PROMPTS, num_inference_steps=STEPS, guidance_scale=7.5, height=SIZE,
            width=SIZE, output_type="np",
            latents=torch.from_numpy(latents.transpose(0, 3, 1, 2).copy())).images * 2.0 - 1.0
    np.testing.assert_allclose(images, want, atol=1e-4, rtol=0)
