"""Sampling: timestep spacings, the samplers (one `lax.scan` each) and classifier-free guidance.

- `timesteps(schedule, num_steps, spacing="leading", steps_offset=0, *, method=None,
  rule="diffusers")`: the descending timesteps of a run, the list the diffusers scheduler of
  `method` makes (int32; float32 for the fractional euler/heun "linspace" lists) (`spacing.py`).
  `DIFFUSERS_DEFAULT_SPACINGS`: each method's diffusers scheduler's default spacing;
  `TIMESTEP_RULES`: "diffusers", "shared".
- `sample(model_fn, schedule, x_T, *, method, num_steps, ...)`: one compiled run of a sampler
  (`loop.py`); pass `jax.tree_util.Partial(apply_fn, params)` as model_fn to reuse the compiled
  sampler across parameter updates.
- `SAMPLERS`: the registry {"ddpm", "ddim", "dpmpp_2m", "euler", "heun"} of `Sampler`s, one
  file each; `base.py` holds the shared step interface, guidance, parameterisation and
  thresholding.
- `FLOW_METHODS` ("flow_euler", "flow_heun"), `sample_flow`, `flow_sigmas`, `flux_mu`: samplers
  for flow-matching models (`flow.py`); `sample(..., method="flow_euler")` dispatches to them.
"""

from jaxdiff.sampling.base import Sampler, threshold
from jaxdiff.sampling.ddpm import VARIANCE_TYPES
from jaxdiff.sampling.flow import FLOW_METHODS, flow_sigmas, flux_mu, sample_flow
from jaxdiff.sampling.loop import SAMPLERS, sample
from jaxdiff.sampling.spacing import DIFFUSERS_DEFAULT_SPACINGS, SPACINGS, TIMESTEP_RULES, timesteps

__all__ = ["DIFFUSERS_DEFAULT_SPACINGS", "FLOW_METHODS", "SAMPLERS", "SPACINGS", "TIMESTEP_RULES",
           "VARIANCE_TYPES", "Sampler", "flow_sigmas", "flux_mu", "sample", "sample_flow",
           "threshold", "timesteps"]
