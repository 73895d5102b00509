"""Sampling: timestep spacings, the samplers (one `lax.scan` each) and classifier-free guidance.

- `timesteps(schedule, num_steps, spacing="leading", steps_offset=0)`: the descending int32
  timesteps of a run (`spacing.py`).
- `sample(model_fn, schedule, x_T, *, method, num_steps, ...)`: one compiled run of a sampler
  (`loop.py`); pass `jax.tree_util.Partial(apply_fn, params)` as model_fn to reuse the compiled
  sampler across parameter updates.
- `SAMPLERS`: the registry {"ddpm", "ddim", "dpmpp_2m", "euler", "heun"} of `Sampler`s, one
  file each; `base.py` holds the shared step interface, guidance, parameterisation and
  thresholding.
"""

from jaxdiff.sampling.base import Sampler, threshold
from jaxdiff.sampling.ddpm import VARIANCE_TYPES
from jaxdiff.sampling.loop import SAMPLERS, sample
from jaxdiff.sampling.spacing import SPACINGS, timesteps

__all__ = ["SAMPLERS", "SPACINGS", "VARIANCE_TYPES", "Sampler", "sample", "threshold",
           "timesteps"]
