"""Flow matching (rectified flow) on the embedded digits: the `digits` model and training, the
flow objective with SD3's logit-normal training times, sampled with flow Heun.

Run: `jaxdiff train --config digits_flow --workdir runs/digits_flow`, then
`jaxdiff sample --workdir runs/digits_flow --steps 10` (method flow_heun from this preset).
"""

from jaxdiff.configs import digits


def get_config():
    config = digits.get_config()
    config.diffusion.objective = "flow"
    config.diffusion.flow_time_sampling = "logit_normal"
    config.diffusion.flow_logit_mean = 0.0
    config.diffusion.flow_logit_std = 1.0
    config.sampling.method = "flow_heun"
    config.sampling.num_steps = 25
    return config
