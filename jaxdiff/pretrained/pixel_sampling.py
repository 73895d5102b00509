"""Sampling a diffusers pixel pipeline folder (a UNet2DModel and its scheduler) with jaxdiff.

The scheduler's config gives the schedule, spacing, steps_offset, prediction type and clipping
(`jaxdiff.pipelines.scheduler_config.sampler_settings`); any jaxdiff sampler can replace the
folder's own. With the same initial noise (`latents`) the result equals the diffusers scheduler
loop of the same class to float32 precision.

Example:
  >>> pipe = load_pixel_pipeline("ddpm-cifar10-32")                      # doctest: +SKIP
  >>> images = generate(pipe, num=16, method="ddim", num_steps=50)       # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff.validation import InputError


@dataclasses.dataclass(frozen=True)
class PixelPipeline:
    """A loaded UNet2DModel folder: `unet` (LoadedComponent) and `scheduler_config` (dict)."""

    unet: object
    scheduler_config: dict
    name: str

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C) the model was trained at (the config's sample_size)."""
        size = self.unet.config.get("sample_size", self.unet.kwargs["image_size"])
        h, w = (size, size) if isinstance(size, int) else size
        return int(h), int(w), int(self.unet.kwargs["in_channels"])


def load_pixel_pipeline(folder, *, variant: str | None = None,
                        dtype: str = "float32") -> PixelPipeline:
    """Loads a DDPMPipeline-style folder (model_index.json, unet/ a UNet2DModel, scheduler/)."""
    from jaxdiff.pipelines.scheduler_config import sampler_settings
    from jaxdiff.pretrained.pipeline import load_pipeline

    loaded = load_pipeline(folder, variant=variant, dtype=dtype,
                           required=("unet", "scheduler"))
    unet = loaded.components.get("unet")
    if unet is None or unet.kind != "UNet2DModel":
        kind = loaded.index.get("unet", [None, None])[1]
        raise InputError(f"{str(folder)!r}: its unet is a {kind}, not the pixel UNet2DModel "
                         f"`jaxdiff sample --pretrained` samples (use `jaxdiff txt2img` for "
                         f"Stable Diffusion folders)")
    sampler_settings(loaded.scheduler_config)  # refuses unsupported settings before compiling
    return PixelPipeline(unet=unet, scheduler_config=loaded.scheduler_config, name=str(folder))


def check_latents(latents, num: int, shape: tuple[int, int, int], what: str = "latents"
                  ) -> np.ndarray:
    """The initial noise x_T as float32 (num, H, W, C) NHWC; InputError naming what is wrong."""
    array = np.asarray(latents)
    expected = (num, *shape)
    if array.dtype != np.float32:
        raise InputError(f"{what} must be float32 (NHWC noise x_T of shape {expected}); got "
                         f"dtype {array.dtype}")
    if array.ndim != 4 or array.shape[0] != num or array.shape[3] != shape[2]:
        raise InputError(f"{what} must have shape (num, H, W, C) = {expected} (NHWC: transpose "
                         f"diffusers' NCHW arrays with .transpose(0, 2, 3, 1)); got "
                         f"{array.shape}")
    if not np.all(np.isfinite(array)):
        raise InputError(f"{what} holds {int(np.sum(~np.isfinite(array)))} non-finite values")
    return array


def generate(pipe: PixelPipeline, *, num: int, num_steps: int, method: str | None = None,
             seed: int = 0, latents=None, batch_size: int | None = None, eta: float = 0.0,
             spacing: str | None = None,
             progress: Callable[[int], None] | None = None) -> np.ndarray:
    """Samples `num` images (numpy float32 (num, H, W, C), the sampler's final x_0).

    Args:
      pipe: from `load_pixel_pipeline`.
      num: number of images; num_steps: sampler steps.
      method: a jaxdiff sampler, or None for the folder's scheduler (see `sampler_settings`).
      seed: image batch i draws x_T (unless `latents`) and its ancestral noise from
        fold_in(key(seed), i).
      latents: optional initial noise x_T, float32 (num, H, W, C).
      batch_size: images per compiled call (default min(num, 16)); the last batch is padded.
      eta: DDIM eta. spacing: overrides the config's timestep spacing.
      progress: called with the number of images done after each batch.
    """
    from jaxdiff.models import make_model_fn
    from jaxdiff.pipelines.scheduler_config import sampler_settings
    from jaxdiff.sampling import sample
    from jaxdiff.sampling.image_keys import image_keys, initial_noise, step_noise_keys

    settings = sampler_settings(pipe.scheduler_config, method)
    options = dict(settings.options)
    if spacing is not None:
        options["spacing"] = spacing
    if isinstance(num, bool) or not isinstance(num, (int, np.integer)) or num < 1:
        raise InputError(f"the number of images must be an integer >= 1; got {num!r}")
    batch_size = min(num, 16) if batch_size is None else batch_size
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
            or batch_size < 1:
        raise InputError(f"batch size must be an integer >= 1; got {batch_size!r}")
    batch_size = int(min(batch_size, num))
    shape = pipe.image_shape
    if latents is not None:
        latents = check_latents(latents, num, shape)
        shape = latents.shape[1:]
    model_fn = make_model_fn(pipe.unet.graphdef, pipe.unet.params)
    base = jax.random.key(seed)
    images = []
    for i in range(-(-num // batch_size)):
        keys = image_keys(base, i * batch_size, batch_size)
        if latents is None:
            x_T = initial_noise(keys, shape)
        else:
            chunk = latents[i * batch_size:(i + 1) * batch_size]
            x_T = jnp.asarray(np.concatenate(
                [chunk, np.zeros((batch_size - len(chunk), *shape), np.float32)]))
        out = sample(model_fn, settings.schedule, x_T, method=settings.method,
                     num_steps=num_steps, eta=eta, key=step_noise_keys(keys), **options)
        images.append(np.asarray(out))
        if progress is not None:
            progress(min((i + 1) * batch_size, num))
    return np.concatenate(images)[:num]
