"""CIFAR-10 with the DDPM paper's 35.7M-parameter UNet (Ho et al. 2020, appendix B).

128 channels, multipliers (1, 2, 2, 2), two ResBlocks per level, attention at 16x16, dropout 0.1,
linear schedule T=1000, Adam 2e-4 with 5000 warmup steps, batch 128, EMA 0.9999, random flips.
Prepare the data once on a machine with internet (see README, "Datasets"), then:

  jaxdiff train --config cifar10 --workdir runs/cifar10 --config.data.data_dir=/path/to/tfds

The paper trains 800k steps (about 10.6 days on a TPU v3-8); on one H100 expect several days.
"""

from jaxdiff.configs import digits


def get_config():
    config = digits.get_config()
    config.data.name = "cifar10"
    config.data.image_size = 32
    config.data.channels = 3
    config.data.random_flip = True
    config.data.worker_count = 4

    config.model.base_channels = 128
    config.model.channel_mults = (1, 2, 2, 2)
    config.model.num_res_blocks = 2
    config.model.attention_resolutions = (16,)
    config.model.num_heads = 1
    config.model.dropout = 0.1
    config.model.num_groups = 32

    config.diffusion.schedule = "linear"
    config.train.batch_size = 128
    config.train.num_steps = 800_000
    config.train.log_every = 100
    config.train.ema_decay = 0.9999
    config.optim.learning_rate = 2e-4
    config.optim.warmup_steps = 5000
    config.optim.end_learning_rate_fraction = 1.0  # the paper keeps the rate constant
    config.optim.b2 = 0.999
    config.checkpoint.every_steps = 10_000
    config.sampling.num_samples = 64
    config.sampling.batch_size = 512
    return config
