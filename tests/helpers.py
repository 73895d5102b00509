"""Small configs shared by the tests (tiny models so that compiles and steps are fast)."""

from jaxdiff.configs import get_config


def tiny_config(preset: str = "digits", **train):
    config = get_config(preset)
    config.model.base_channels = 8
    config.model.channel_mults = (1, 2)
    config.model.num_res_blocks = 1
    config.model.attention_resolutions = (8,)
    config.model.num_heads = 2
    config.model.num_groups = 4
    config.train.batch_size = 8
    config.train.num_steps = 6
    config.train.log_every = 2
    config.checkpoint.every_steps = 3
    config.optim.warmup_steps = 2
    config.sampling.num_steps = 4
    config.sampling.num_samples = 4
    for key, value in train.items():
        config.train[key] = value
    return config
