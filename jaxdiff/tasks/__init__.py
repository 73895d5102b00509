"""What a training run trains, chosen by `config.task`: one trainer, one step, several models.

The trainer (`jaxdiff.trainer`) reads top to bottom for every task: config -> data -> state ->
jitted step -> loop with logging and checkpoints. A task supplies the parts that differ:

  check_data(info)                      the dataset fits the model (InputError otherwise)
  init_train_state(config, key)         -> (graphdef, optimizer, TrainState)
  make_train_step(graphdef, optimizer)  -> the pure step (built on training.make_step_from_loss)
  host_batch(batch)                     the arrays of a data batch the step reads
  sample_grid(graphdef, params, num)    a uint8 picture for TensorBoard during training
  write_pictures(graphdef, params, workdir, metrics_log, step, verbose)  the end-of-run PNGs

Tasks: "pixel_diffusion" (the UNet on images), "autoencoder" (stage 1 of latent diffusion:
`AutoencoderKL`), "text_to_image" (stage 2: the cross-attention UNet on an autoencoder's latents,
with a CLIP-architecture text encoder trained jointly).
"""

from __future__ import annotations

import importlib
from pathlib import Path

from jaxdiff.validation import check_choice

TASKS = {
    "pixel_diffusion": "jaxdiff.tasks.pixel:PixelDiffusion",
    "autoencoder": "jaxdiff.tasks.autoencoder:AutoencoderTask",
    "text_to_image": "jaxdiff.tasks.text_to_image:TextToImageTask",
}


def make_task(config, workdir: Path | None = None):
    """The task object of `config.task` (InputError for an unknown one)."""
    check_choice("task", config.task, TASKS)
    module, name = TASKS[config.task].split(":")
    return getattr(importlib.import_module(module), name)(config, workdir)
