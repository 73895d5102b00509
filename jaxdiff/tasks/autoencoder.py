"""Stage 1 of latent diffusion: train the `AutoencoderKL` (config.task = "autoencoder").

The loss of a batch x (B, H, W, C) in [-1, 1], with the posterior N(mean, exp(logvar)) of the
encoder and a draw z from it, decoded to x_hat:

  loss = l1_weight * mean|x - x_hat| + l2_weight * mean (x - x_hat)^2
         + kl_weight * mean 0.5 (mean^2 + exp(logvar) - 1 - logvar)

(means over every pixel or latent element). No perceptual or adversarial loss: on flat-colored
shapes the pixel losses alone reconstruct sharp edges, and both would need a pretrained network
or a second optimizer. The KL term only keeps the latents near a unit Gaussian's scale; the
diffusion stage rescales them by their measured standard deviation anyway.
"""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff import training
from jaxdiff.validation import InputError


def autoencoder_kwargs(config) -> dict:
    """AutoencoderKL keyword arguments from config.model."""
    kwargs = dict(config.model)
    kwargs["block_out_channels"] = tuple(kwargs["block_out_channels"])
    return kwargs


def reconstruction_losses(x, x_hat, mean, logvar) -> dict:
    """Per-batch means of |x - x_hat|, (x - x_hat)^2 and the KL to N(0, I) per latent element."""
    diff = x - x_hat
    kl = 0.5 * (jnp.square(mean) + jnp.exp(logvar) - 1.0 - logvar)
    return {"l1": jnp.mean(jnp.abs(diff)), "l2": jnp.mean(jnp.square(diff)), "kl": jnp.mean(kl)}


def psnr(x, x_hat) -> float:
    """Peak signal-to-noise ratio in dB of images in [-1, 1] (peak-to-peak 2)."""
    mse = float(np.mean(np.square(np.asarray(x, np.float64) - np.asarray(x_hat, np.float64))))
    return float(10.0 * np.log10(4.0 / max(mse, 1e-20)))


class AutoencoderTask:
    """See `jaxdiff.tasks`."""

    def __init__(self, config, workdir=None):
        self.config = config
        weights = config.autoencoder_loss
        for key in ("l1_weight", "l2_weight", "kl_weight"):
            if not float(weights[key]) >= 0:
                raise InputError(f"autoencoder_loss.{key} must be >= 0; got {weights[key]!r}")

    def check_data(self, info) -> None:
        from jaxdiff.models.autoencoder import abstract_autoencoder

        _, params = abstract_autoencoder(autoencoder_kwargs(self.config))
        del params
        c, m = self.config.data, self.config.model
        f = 2 ** (len(m.block_out_channels) - 1)
        if c.channels != m.in_channels or c.channels != m.out_channels:
            raise InputError(f"data.channels={c.channels} but the autoencoder has "
                             f"model.in_channels={m.in_channels}, model.out_channels="
                             f"{m.out_channels}; make them equal")
        if c.image_size % f:
            raise InputError(f"data.image_size={c.image_size} must be a multiple of the "
                             f"autoencoder's downsampling factor {f} (2**(levels-1))")

    def init_train_state(self, config, key):
        from jaxdiff.models.autoencoder import init_autoencoder

        init_key, run_key = jax.random.split(key)
        graphdef, params = init_autoencoder(autoencoder_kwargs(config), init_key)
        optimizer = training.make_optimizer(config.optim, config.train.num_steps)
        return graphdef, optimizer, training.create_train_state(params, optimizer, run_key)

    def make_train_step(self, graphdef, optimizer):
        from jaxdiff.models.autoencoder import merge_autoencoder, sample_posterior

        w = self.config.autoencoder_loss
        l1_w, l2_w, kl_w = float(w.l1_weight), float(w.l2_weight), float(w.kl_weight)

        def loss_fn(params, batch, key):
            model = merge_autoencoder(graphdef, params)
            x = batch["image"]
            mean, logvar = model.encode(x)
            x_hat = model.decode(sample_posterior(key, mean, logvar))
            parts = reconstruction_losses(x, x_hat, mean, logvar)
            loss = l1_w * parts["l1"] + l2_w * parts["l2"] + kl_w * parts["kl"]
            return loss, parts

        return training.make_step_from_loss(loss_fn, optimizer, self.config)

    def host_batch(self, batch: dict) -> dict:
        return {"image": np.asarray(batch["image"], np.float32)}

    def reconstructions(self, graphdef, params, num: int) -> tuple[np.ndarray, np.ndarray]:
        """(originals, reconstructions from the posterior mean), the first `num` test images
        (train images when the dataset has no "test" split), float32 in [-1, 1]."""
        from jaxdiff.data import dataset_info, load_split
        from jaxdiff.models.autoencoder import decode, encode

        split = "test" if "test" in dataset_info(self.config.data).splits else "train"
        images, _ = load_split(self.config.data, split, max_examples=num)
        out = []
        for start in range(0, len(images), 256):
            mean, _ = encode(graphdef, params, jnp.asarray(images[start:start + 256]))
            out.append(np.asarray(decode(graphdef, params, mean)))
        return images, np.clip(np.concatenate(out), -1.0, 1.0)

    def sample_grid(self, graphdef, params, num: int):
        from jaxdiff.viz import image_grid

        originals, recon = self.reconstructions(graphdef, params, num)
        # rows of originals, each followed by its row of reconstructions
        cols = 8
        rows = []
        for start in range(0, len(originals), cols):
            rows += [originals[start:start + cols], recon[start:start + cols]]
        pairs = np.concatenate([np.pad(r, ((0, cols - len(r)), (0, 0), (0, 0), (0, 0)),
                                       constant_values=-1.0) for r in rows])
        return image_grid(pairs, nrow=cols, upscale=2)

    def write_pictures(self, graphdef, params, workdir, metrics_log, step: int,
                       verbose: bool) -> None:
        from jaxdiff.viz import save_png

        grid = self.sample_grid(graphdef, params, 32)
        save_png(grid, workdir / "reconstructions.png")
        metrics_log.write_image(step, "reconstructions", grid)
        if verbose:
            print(f"wrote {workdir / 'reconstructions.png'} (rows: originals, then their "
                  f"reconstructions)", file=sys.stderr)
