"""Stage 1 of text to image on the embedded captioned shapes: the AutoencoderKL, 32x32x3 -> 8x8x4.

Run: `jaxdiff train --config shapes_vae --workdir runs/shapes_vae`, then
`jaxdiff reconstruct --workdir runs/shapes_vae` (PSNR on the test split and a picture of
originals and reconstructions). Stage 2 is the preset shapes_t2i. Loss: L1 + MSE + 1e-4 KL per
element (jaxdiff/tasks/autoencoder.py); 0.65M parameters (README: measured speed and PSNR).
"""

import ml_collections

from jaxdiff.configs import digits


def get_config():
    config = digits.get_config()
    config.task = "autoencoder"
    config.data.name = "shapes"
    config.data.image_size = 32
    config.data.channels = 3
    config.data.caption_key = "caption"

    # AutoencoderKL's keyword arguments (diffusers' names): the model's signature is the schema.
    config.model = ml_collections.ConfigDict()
    config.model.in_channels = 3
    config.model.out_channels = 3
    config.model.block_out_channels = (16, 32, 64)
    config.model.layers_per_block = 1
    config.model.latent_channels = 4
    config.model.norm_num_groups = 8
    config.model.mid_block_add_attention = False
    config.model.dtype = "float32"

    config.autoencoder_loss = ml_collections.ConfigDict()
    config.autoencoder_loss.l1_weight = 1.0
    config.autoencoder_loss.l2_weight = 1.0
    config.autoencoder_loss.kl_weight = 1e-4

    config.train.batch_size = 32
    config.train.num_steps = 1200
    config.train.log_every = 50
    config.train.ema_decay = 0.99
    config.optim.learning_rate = 2e-3
    config.optim.warmup_steps = 100
    config.checkpoint.every_steps = 400
    return config
