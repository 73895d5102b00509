"""Text to image with a latent diffusion model: one jitted function from token ids to pixels.

`TextToImage` holds the loaded parts (a host tokenizer, the text encoder, the UNet and the
autoencoder's decoder as pure functions of their params, the sampler settings); it is built from
a diffusers Stable Diffusion folder by `load_text_to_image` (loading.py) or from the parts of a
jaxdiff-trained run, and `generate` then runs, as ONE compiled call per batch:
  text encoding of the prompts and negative prompts (token ids are traced inputs) ->
  the whole latent denoising, one `lax.scan` of `jaxdiff.sampling.sample` with classifier-free
  guidance uncond + g (cond - uncond) on the text states ->
  decoding of latents / scaling_factor + shift_factor by the autoencoder, clipped to [-1, 1].
Prompts, negative prompts, guidance scale, seeds and initial latents are traced: changing them
never recompiles; a new batch or image size, step count or method compiles once.

The initial latent of image i is `normal(fold_in(fold_in(key, i), 0))` (and the ancestral noise
of its step k, for DDPM or DDIM with eta > 0, `normal(fold_in(fold_in(key, i), k + 1))`), so an
image depends only on the key and its index, not on the batch size or the number of devices.
Every batch is split over all local devices (data parallel; parameters replicated).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff.pipelines.scheduler_config import METHOD_CLASSES, SamplerSettings, sampler_settings
from jaxdiff.validation import InputError, InputTypeError, check_choice, check_int


@dataclasses.dataclass(frozen=True)
class TextToImage:
    """The loaded parts of a text-to-image latent diffusion model.

    Attributes:
      tokenize: host function, list of N strings -> int32 token ids (N, L) (padded/truncated).
      encode_text: hashable pure function (params, ids (N, L) int32) -> states (N, L, D).
      predict: hashable pure function (params, x (B, h, w, c), t (B,), states (B, L, D)) ->
        the UNet output (B, h, w, c) in the parameterisation of `sampler.prediction_type`.
      decode: hashable pure function (params, z (B, h, w, c) unscaled latents) -> images
        (B, H, W, 3), about [-1, 1].
      params: {"text_encoder": ..., "unet": ..., "vae": ...} pytrees for the three functions.
      sampler: the settings of the scheduler the model comes with (`sampler_settings`).
      scheduler_config: the diffusers scheduler config dict, so that another method is
        configured from it as diffusers would; None (a jaxdiff-trained model) keeps the
        schedule and options of `sampler` for every method.
      scaling_factor, shift_factor: latents for the UNet are (z - shift) * scale.
      latent_channels: c.
      vae_factor: pixels per latent along each side (8 for Stable Diffusion).
      size_multiple: height and width must be positive multiples of this (vae_factor times the
        UNet's own downsampling factor).
      default_size: the pixel size the model was trained at (UNet sample_size * vae_factor).
      name: what it was loaded from (for messages).
    """

    tokenize: Callable[[Sequence[str]], np.ndarray]
    encode_text: Callable
    predict: Callable
    decode: Callable
    params: dict
    sampler: SamplerSettings
    scheduler_config: dict | None
    scaling_factor: float
    shift_factor: float
    latent_channels: int
    vae_factor: int
    size_multiple: int
    default_size: int
    name: str = "model"

    def settings(self, method: str | None = None) -> SamplerSettings:
        """The sampler settings for `method` (None: the model's own), as diffusers would build
        that method's scheduler from the same config."""
        if method is None or method == self.sampler.method:
            return self.sampler
        if self.scheduler_config is None:
            check_choice("sampler", method, METHOD_CLASSES)
            return dataclasses.replace(self.sampler, method=method,
                                       scheduler_class=METHOD_CLASSES[method], note=None)
        return sampler_settings(self.scheduler_config, method)


_STATIC = ("fns", "method", "num_steps", "options", "latent_shape", "stochastic",
           "scaling_factor", "shift_factor")


@functools.partial(jax.jit, static_argnames=_STATIC)
def _generate(params, ids, negative_ids, latents, use_latents, key, indices, guidance_scale, eta,
              schedule, *, fns, method, num_steps, options, latent_shape, stochastic, scaling_factor,
              shift_factor):
    """The compiled generation of one batch; see the module docstring."""
    from jaxdiff.sampling import sample
    from jaxdiff.sampling.image_keys import initial_noise

    encode_text, predict, decode = fns
    states = encode_text(params["text_encoder"], jnp.concatenate([ids, negative_ids]))
    cond, uncond = jnp.split(states, 2)
    image_keys = jax.vmap(jax.random.fold_in, (None, 0))(key, indices)
    # Drawn or given latents in one program, so that both kinds of call share one compilation.
    drawn = initial_noise(image_keys, latent_shape)
    latents = jnp.where(use_latents, latents, drawn)
    noise = None
    if stochastic:
        steps = jnp.arange(1, num_steps + 1)
        draw = jax.vmap(lambda k: jax.vmap(lambda s: jax.random.normal(
            jax.random.fold_in(k, s), latent_shape, jnp.float32))(steps))
        noise = jnp.swapaxes(draw(image_keys), 0, 1)  # (num_steps, batch, ...)
    model_fn = jax.tree_util.Partial(predict, params["unet"])
    z = sample(model_fn, schedule, latents, method=method, num_steps=num_steps, noise=noise,
               context=cond, null_context=uncond.astype(cond.dtype),
               guidance_scale=guidance_scale, eta=eta if stochastic else 0.0,
               **dict(options))
    images = decode(params["vae"], z / scaling_factor + shift_factor)
    return jnp.clip(images.astype(jnp.float32), -1.0, 1.0)


def _prompt_list(prompts, what: str) -> list[str]:
    if isinstance(prompts, str):
        return [prompts]
    if not isinstance(prompts, (list, tuple)) or not all(isinstance(p, str) for p in prompts):
        raise InputTypeError(f"{what} must be a string or a list of strings; got {prompts!r}")
    return list(prompts)


def check_size(model: TextToImage, height, width) -> tuple[int, int]:
    """(height, width) in pixels, defaulting to the model's; multiples of `size_multiple`."""
    height = model.default_size if height is None else height
    width = model.default_size if width is None else width
    m = model.size_multiple
    for value, what in ((height, "height"), (width, "width")):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < m \
                or value % m:
            raise InputError(
                f"{what} must be a positive multiple of {m} (the autoencoder's downsampling "
                f"factor {model.vae_factor} times the UNet's {m // model.vae_factor}); got "
                f"{value!r}")
    return int(height), int(width)


def check_latents(model: TextToImage, latents, num: int, height: int, width: int) -> np.ndarray:
    """Initial latents as float32 (num, height/f, width/f, latent_channels), NHWC."""
    want = (num, height // model.vae_factor, width // model.vae_factor, model.latent_channels)
    shape, dtype = getattr(latents, "shape", None), getattr(latents, "dtype", None)
    if shape is None or dtype is None or not np.issubdtype(np.dtype(dtype), np.floating):
        raise InputTypeError(f"latents must be a float array of shape {want} (NHWC: images, "
                             f"height/{model.vae_factor}, width/{model.vae_factor}, latent "
                             f"channels); got {dtype if dtype is not None else type(latents)}")
    if tuple(shape) != want:
        raise InputError(f"latents must have shape {want} (NHWC: {num} images of "
                         f"{height}x{width} pixels, {model.latent_channels} latent channels; "
                         f"diffusers' NCHW latents need .transpose(0, 2, 3, 1)); got "
                         f"{tuple(shape)}")
    latents = np.asarray(latents, np.float32)
    if not np.all(np.isfinite(latents)):
        raise InputError("latents contain values that are not finite")
    return latents


def _as_key(key):
    if key is None:
        return None
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        return jax.random.key(int(key))
    dtype = getattr(key, "dtype", None)
    if dtype is None or not jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key) or key.shape:
        raise InputTypeError(f"key must be an int seed or a single jax.random.key(seed); got "
                             f"{key!r}")
    return key


def device_shardings():
    """(batch split over all local devices, replicated, number of devices)."""
    devices = jax.local_devices()
    mesh = jax.sharding.Mesh(np.array(devices), ("data",))
    P = jax.sharding.PartitionSpec
    return (jax.sharding.NamedSharding(mesh, P("data")), jax.sharding.NamedSharding(mesh, P()),
            len(devices))


def generate(model: TextToImage, prompts, negative_prompts=None, *, num_steps: int = 25,
             method: str | None = None, guidance_scale: float = 7.5, height: int | None = None,
             width: int | None = None, key=None, latents=None, eta: float = 0.0,
             batch_size: int | None = None, first_index: int = 0,
             progress: Callable[[int], None] | None = None) -> np.ndarray:
    """Images for the prompts, NHWC float32 in [-1, 1].

    Args:
      model: the loaded TextToImage.
      prompts: a string or N strings (one image each).
      negative_prompts: None (the empty prompt, as diffusers), a string for all, or N strings.
      num_steps: sampler steps.
      method: "ddim", "dpmpp_2m", "euler", "heun", "ddpm"; None is the model's own scheduler.
      guidance_scale: g of classifier-free guidance (traced; 1 is the prompt alone).
      height, width: pixels, multiples of `model.size_multiple` (default `model.default_size`).
      key: an int seed or a jax.random.key: image i starts from normal(fold_in(fold_in(key,
        first_index + i), 0)). Needed unless `latents` is given (and then still for DDPM or DDIM
        with eta > 0, which draw noise at every step).
      latents: instead, the initial latents (N, height/f, width/f, latent_channels) float32,
        before any scaling by the sampler's initial sigma (diffusers' `latents`, transposed
        from NCHW).
      eta: DDIM's eta (traced; 0 is deterministic).
      batch_size: images per compiled call (default N, at most 8); the last batch is padded.
      first_index: index of the first image (for seeds that continue an earlier call).
      progress: called with the number of images done after each batch.

    Returns:
      numpy float32 (N, height, width, 3), clipped to [-1, 1] as diffusers clips to [0, 1].
    """
    prompts = _prompt_list(prompts, "prompts")
    num = len(prompts)
    if num == 0:
        raise InputError("prompts is empty: give at least one prompt")
    if negative_prompts is None:
        negative_prompts = [""] * num
    elif isinstance(negative_prompts, str):
        negative_prompts = [negative_prompts] * num
    negative_prompts = _prompt_list(negative_prompts, "negative_prompts")
    if len(negative_prompts) != num:
        raise InputError(f"negative_prompts must be one string or one per prompt ({num}); got "
                         f"{len(negative_prompts)}")
    settings = model.settings(method)
    check_int(num_steps, "num_steps", 1, settings.schedule.num_timesteps)
    height, width = check_size(model, height, width)
    stochastic = settings.method == "ddpm" or (settings.method == "ddim" and float(eta) != 0.0)
    if latents is not None:
        latents = check_latents(model, latents, num, height, width)
    key = _as_key(key)
    if key is None and (latents is None or stochastic):
        raise InputError("give key (an int seed or jax.random.key) or latents; "
                         f"{settings.method} with eta={eta} also needs key for its step noise"
                         if latents is not None else "give key (an int seed or "
                         "jax.random.key) or latents")
    if key is None:
        key = _as_key(0)  # not drawn from: the latents are given and the sampler adds no noise
    g = float(guidance_scale)
    if not math.isfinite(g):
        raise InputError(f"guidance_scale must be finite; got {guidance_scale!r}")
    batch_size = min(num, 8) if batch_size is None else check_int(batch_size, "batch_size")
    batch_size = min(batch_size, num)
    data, replicated, num_devices = device_shardings()
    batch = -(-batch_size // num_devices) * num_devices  # every device gets the same share
    params = jax.device_put(model.params, replicated)
    ids = model.tokenize(prompts)
    negative_ids = model.tokenize(negative_prompts)
    latent_shape = (height // model.vae_factor, width // model.vae_factor, model.latent_channels)
    use_latents = np.bool_(latents is not None)
    if latents is None:
        latents = np.zeros((num, *latent_shape), np.float32)
    static = {"fns": (model.encode_text, model.predict, model.decode),
              "method": settings.method, "num_steps": int(num_steps),
              "options": tuple(sorted(settings.options.items())), "latent_shape": latent_shape,
              "stochastic": stochastic, "scaling_factor": float(model.scaling_factor),
              "shift_factor": float(model.shift_factor)}
    out = []
    for start in range(0, num, batch):
        rows = np.resize(np.arange(start, min(start + batch, num)), batch)  # pad: repeat rows
        put = functools.partial(jax.device_put, device=data)
        images = _generate(
            params, put(ids[rows]), put(negative_ids[rows]), put(latents[rows]), use_latents,
            key, put((first_index + rows).astype(np.int32)), np.float32(g), np.float32(eta),
            settings.schedule, **static)
        out.append(np.asarray(images)[:min(batch, num - start)])
        if progress is not None:
            progress(min(start + batch, num))
    return np.concatenate(out)


def describe(model: TextToImage, method: str | None = None) -> str:
    """One line on what sampler and schedule a generation uses."""
    s = model.settings(method)
    o = s.options
    return (f"{s.method} (as diffusers' {s.scheduler_class}), {o['prediction_type']}, "
            f"{o['spacing']} spacing, steps_offset {o['steps_offset']}")


def latent_size(model: TextToImage, height: int, width: int) -> tuple[int, int, int]:
    """(h, w, c) of the latents of a height x width image."""
    height, width = check_size(model, height, width)
    return height // model.vae_factor, width // model.vae_factor, model.latent_channels

