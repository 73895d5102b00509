"""64x64 faces (TFDS celeb_a, center-cropped and resized) with an 88M-parameter UNet.

Channels 128 x (1, 2, 3, 4), two ResBlocks per level, attention at 16x16 and 8x8 with 4 heads,
dropout 0.1, cosine schedule (better than linear at 64x64; Nichol & Dhariwal 2021), batch 128.

  jaxdiff train --config celeba64 --workdir runs/celeba64 --config.data.data_dir=/path/to/tfds

Use `--config.model.dtype=bfloat16` on GPUs/TPUs and `--config.mesh.fsdp=N` when the
optimizer state does not fit one device; `--config.model.remat=true` trades compute for memory.
"""

from jaxdiff.configs import digits


def get_config():
    config = digits.get_config()
    config.data.name = "celeb_a"
    config.data.image_size = 64
    config.data.channels = 3
    config.data.random_flip = True
    config.data.worker_count = 8

    config.model.base_channels = 128
    config.model.channel_mults = (1, 2, 3, 4)
    config.model.num_res_blocks = 2
    config.model.attention_resolutions = (16, 8)
    config.model.num_heads = 4
    config.model.dropout = 0.1
    config.model.num_groups = 32

    config.diffusion.schedule = "cosine"
    config.train.batch_size = 128
    config.train.num_steps = 500_000
    config.train.log_every = 100
    config.train.ema_decay = 0.9999
    config.optim.learning_rate = 1e-4
    config.optim.warmup_steps = 5000
    config.optim.end_learning_rate_fraction = 1.0
    config.optim.b2 = 0.999
    config.checkpoint.every_steps = 10_000
    config.sampling.batch_size = 256
    return config
