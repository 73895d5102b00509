"""Generating images from a trained run: restore the EMA parameters, sample in fixed-size batches.

The same (checkpoint, seed, method, steps, labels) always gives the same images: image i draws its
x_T and ancestral noise from `fold_in(key(seed), i)` alone (`jaxdiff.sampling.image_keys`), so the
batch size does not change them, and the last batch is padded to full size so every batch runs the
same compiled sampler.
"""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff import checkpoint as ckpt_lib
from jaxdiff import training
from jaxdiff.validation import InputError, InputFileNotFoundError


def load_run(workdir, step: int | None = None):
    """Returns (config, graphdef, ema_params, step) of the run saved in `workdir`."""
    from jaxdiff.run_kind import open_run

    workdir, config = open_run(workdir, "pixel_diffusion")
    # Closed on every path, a failed restore included, so that nothing of orbax's outlives it.
    with ckpt_lib.Checkpointer(workdir, max_to_keep=None, read_only=True) as checkpointer:
        if checkpointer.latest_step() is None:
            raise InputFileNotFoundError(f"no checkpoint in {str(workdir)!r}: train first with "
                                         f"`jaxdiff train --workdir {workdir}`")
        graphdef, _, state = training.init_train_state(config)
        state, _ = checkpointer.restore(ckpt_lib.abstract_like(state), step)
    return config, graphdef, state.ema_params, int(state.step)


def check_method_fits_objective(method: str, objective: str) -> None:
    """Refuses a DDPM-family sampler for a flow-matching run and a flow sampler for the rest."""
    from jaxdiff.sampling.flow import FLOW_METHODS

    if objective == "flow" and method not in FLOW_METHODS:
        raise InputError(f"this run was trained with flow matching (diffusion.objective='flow'); "
                         f"sample it with one of {list(FLOW_METHODS)}, not {method!r}")
    if objective != "flow" and method in FLOW_METHODS:
        raise InputError(f"{method!r} samples flow-matching runs; this run's objective is "
                         f"{objective!r}: use ddpm, ddim, dpmpp_2m, euler or heun")


def parse_labels(labels, num: int, num_classes: int):
    """Labels for `num` images: None, an int, or a sequence repeated cyclically; int32 (num,)."""
    if labels is None:
        return None
    if num_classes <= 0:
        raise InputError("labels were given but the model is unconditional (model.num_classes=0); "
                         "train with --config digits_cond for a class-conditional model")
    values = np.atleast_1d(np.asarray(labels))
    if values.size == 0 or not np.issubdtype(values.dtype, np.integer):
        raise InputError(f"labels must be integers in [0, {num_classes}); got {labels!r}")
    if values.min() < 0 or values.max() >= num_classes:
        raise InputError(f"labels must be in [0, {num_classes}); got {values.tolist()}")
    return np.resize(values, num).astype(np.int32)


def generate_images(config, graphdef, params, *, num: int, seed: int = 0, method=None,
                    num_steps=None, labels=None, guidance_scale=None, batch_size=None, eta=None,
                    spacing=None, return_trajectory: bool = False, progress: bool = False,
                    latents=None):
    """Samples `num` images (numpy float32 (num, H, W, C) in [-1, 1]) with `params`.

    Unset options come from config.sampling. With return_trajectory=True also returns the
    trajectory of the first batch (see jaxdiff.sampling.sample). `latents`, float32
    (num, H, W, C), replaces the x_T drawn from the seed (the ancestral noise still is).
    """
    from jaxdiff.models import make_model_fn
    from jaxdiff.progress import Progress
    from jaxdiff.sampling import sample
    from jaxdiff.sampling.image_keys import image_keys, initial_noise, step_noise_keys

    s = config.sampling
    method = method or s.method
    num_steps = s.num_steps if num_steps is None else num_steps
    eta = float(s.eta if eta is None else eta)
    spacing = spacing or s.spacing
    check_method_fits_objective(method, config.diffusion.objective)
    if isinstance(num, bool) or not isinstance(num, (int, np.integer)) or num < 1:
        raise InputError(f"the number of images must be an integer >= 1; got {num!r}")
    batch_size = s.batch_size if batch_size is None else batch_size
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
            or batch_size < 1:
        raise InputError(f"batch size must be an integer >= 1; got {batch_size!r}")
    batch_size = int(min(batch_size, num))
    num_classes = int(config.model.num_classes)
    if num_classes == 0:
        if guidance_scale is not None and float(guidance_scale) != 1.0:
            raise InputError(f"guidance scale {guidance_scale} needs a class-conditional model "
                             f"(model.num_classes > 0); this model is unconditional")
        labels = parse_labels(labels, num, num_classes)  # raises if labels were given
        guidance_scale = 1.0
    else:
        guidance_scale = float(s.guidance_scale if guidance_scale is None
                               else guidance_scale)
        labels = parse_labels(labels, num, num_classes)
        if labels is None:
            labels = np.arange(num, dtype=np.int32) % num_classes

    # Every batch is split over all local devices (params replicated) when it divides evenly.
    devices = jax.local_devices()
    if len(devices) > 1 and batch_size % len(devices) == 0:
        mesh = jax.sharding.Mesh(np.array(devices), ("batch",))
        batch_sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("batch"))
        params = jax.device_put(params, jax.sharding.NamedSharding(mesh,
                                                                   jax.sharding.PartitionSpec()))
    else:
        batch_sharding = devices[0]
    model_fn = make_model_fn(graphdef, params, labels_enabled=labels is not None)
    schedule = training.schedule_from_config(config)
    size, channels = config.model.image_size, config.model.in_channels
    if latents is not None:
        from jaxdiff.pretrained.pixel_sampling import check_latents

        latents = check_latents(latents, num, (size, size, channels), "latents")
    base = jax.random.key(seed)
    images, trajectory = [], None
    num_batches = -(-num // batch_size)
    bar = Progress(num, 0, desc="sample", unit="image", enabled=progress)
    for i in range(num_batches):
        keys = image_keys(base, i * batch_size, batch_size)
        if latents is None:
            x_T = initial_noise(keys, (size, size, channels))
        else:  # the last batch is padded to full size (one compiled sampler)
            x_T = np.resize(latents[i * batch_size:(i + 1) * batch_size],
                            (batch_size, *latents.shape[1:]))
        x_T = jax.device_put(x_T, batch_sharding)
        extra = {}
        if labels is not None:
            chunk = np.resize(labels[i * batch_size:(i + 1) * batch_size], batch_size)
            extra = dict(labels=jax.device_put(jnp.asarray(chunk), batch_sharding),
                         guidance_scale=guidance_scale,
                         null_label=num_classes)
        out = sample(model_fn, schedule, x_T, method=method, num_steps=num_steps,
                     prediction_type=config.diffusion.prediction_type, spacing=spacing, eta=eta,
                     key=jax.device_put(step_noise_keys(keys), batch_sharding),
                     return_trajectory=return_trajectory and i == 0,
                     shift=s.flow_shift, **extra)
        if return_trajectory and i == 0:
            out, trajectory = out
        images.append(np.asarray(out))
        bar.update(min((i + 1) * batch_size, num))
    bar.close()
    images = np.concatenate(images)[:num]
    if not np.all(np.isfinite(images)):
        print("warning: some generated pixels are not finite", file=sys.stderr)
    if return_trajectory:
        return images, trajectory
    return images


def save_grid(images, path, labels=None) -> None:
    from jaxdiff.viz import image_grid, save_png

    save_png(image_grid(np.clip(images, -1, 1), labels=labels), path)
