"""Class-conditional digits with classifier-free guidance (labels dropped 10% of the time).

Run: `jaxdiff train --config digits_cond --workdir runs/digits_cond`, then
`jaxdiff sample --workdir runs/digits_cond --labels 0,1,2,3 --guidance 2 --out cond.png`.
"""

from jaxdiff.configs import digits


def get_config():
    config = digits.get_config()
    config.model.num_classes = 10
    config.diffusion.label_dropout = 0.1
    config.sampling.guidance_scale = 2.0
    return config
