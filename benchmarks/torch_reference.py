"""The PyTorch reference: diffusers' UNet2DModel with jaxdiff's architecture, its training step and
its scheduler loops. Imported only when torch and diffusers are installed (`pip install
-e .[bench]`).

The diffusers model is built from `jaxdiff.models.diffusers_equivalent_kwargs(**model_kwargs)`:
the same blocks, widths, attention levels and parameter count as `jaxdiff.models.UNet`.
The training step does the same work as jaxdiff's `train_step`: draw t and eps, noise the batch
(`DDPMScheduler.add_noise`), forward, MSE to eps, backward, clip the global gradient norm to 1,
AdamW, EMA of the parameters. The sampling loops are those of diffusers' DDIMPipeline and
DDPMPipeline (`for t in scheduler.timesteps: eps = unet(x, t); x = scheduler.step(eps, t, x)`)
under `torch.inference_mode()`, without the pipelines' conversion of the result to PIL images.
"""

from __future__ import annotations

import os
from collections.abc import Callable

# Passive OpenMP waiting: on a shared, oversubscribed CPU, torch's spinning OpenMP barriers made
# its 2-thread forward pass 10-100x slower than 1 thread (measured here); with PASSIVE it is not.
# Must be set before torch (libgomp) is loaded; a value the user set is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel

from jaxdiff.models import diffusers_equivalent_kwargs

_THREADS_SET = []


def set_threads(n: int) -> None:
    """torch.set_num_threads(n) and, once per process, set_num_interop_threads(n)."""
    torch.set_num_threads(n)
    if not _THREADS_SET:
        try:
            torch.set_num_interop_threads(n)
        except RuntimeError:  # already set, or parallel work already started
            pass
        _THREADS_SET.append(n)


def diffusers_unet(model_kwargs: dict, seed: int = 0) -> UNet2DModel:
    torch.manual_seed(seed)
    return UNet2DModel(**diffusers_equivalent_kwargs(**dict(model_kwargs)))


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _scheduler_kwargs(config) -> dict:
    d = config.diffusion
    names = {"linear": "linear", "scaled_linear": "scaled_linear", "cosine": "squaredcos_cap_v2"}
    return {"num_train_timesteps": int(d.num_timesteps), "beta_schedule": names[d.schedule],
            "beta_start": 1e-4, "beta_end": 0.02, "clip_sample": False,
            "prediction_type": d.prediction_type}


def make_train_step(config, batch_size: int, seed: int = 0) -> tuple[Callable[[], float], int]:
    """(step, parameter count): `step()` runs one training step on a fixed random batch and
    returns the loss (a Python float, so the call has finished when it returns)."""
    m = config.model
    model = diffusers_unet(dict(m), seed)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    o = config.optim
    opt = torch.optim.AdamW(params, lr=o.learning_rate, betas=(o.b1, o.b2),
                            weight_decay=o.weight_decay)
    ema = [p.detach().clone() for p in params]
    ema_decay = float(config.train.ema_decay)
    sched = DDPMScheduler(**_scheduler_kwargs(config))
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(batch_size, m.in_channels, m.image_size, m.image_size, generator=g) * 2 - 1
    num_timesteps = int(config.diffusion.num_timesteps)

    def step() -> float:
        noise = torch.randn(images.shape, generator=g)
        t = torch.randint(0, num_timesteps, (batch_size,), generator=g)
        x_t = sched.add_noise(images, noise, t)
        out = model(x_t, t).sample
        loss = torch.nn.functional.mse_loss(out, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, float(o.grad_clip_norm))
        opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(ema, params, 1.0 - ema_decay)
        return float(loss.detach())

    return step, count_params(model)


def make_sampler(config, method: str, num_steps: int, batch_size: int, seed: int = 0
                 ) -> Callable[[], torch.Tensor]:
    """`run()` samples a batch with the DDIM (eta 0) or DDPM scheduler loop of the diffusers
    pipelines; spacing "leading", no clipping (as jaxdiff's sampler in the comparison)."""
    m = config.model
    model = diffusers_unet(dict(m), seed).eval()
    cls = {"ddim": DDIMScheduler, "ddpm": DDPMScheduler}[method]
    sched = cls(**_scheduler_kwargs(config), timestep_spacing="leading")
    g = torch.Generator().manual_seed(seed)
    shape = (batch_size, m.in_channels, m.image_size, m.image_size)

    def run() -> torch.Tensor:
        sched.set_timesteps(num_steps)
        with torch.inference_mode():
            x = torch.randn(shape, generator=g)
            for t in sched.timesteps:
                eps = model(x, t).sample
                if method == "ddim":
                    x = sched.step(eps, t, x, eta=0.0).prev_sample
                else:
                    x = sched.step(eps, t, x, generator=g).prev_sample
        return x

    return run


def forward_runner(config, batch_size: int, seed: int = 0) -> Callable[[], torch.Tensor]:
    """One inference forward pass of the diffusers UNet on a fixed batch."""
    m = config.model
    model = diffusers_unet(dict(m), seed).eval()
    x = torch.randn(batch_size, m.in_channels, m.image_size, m.image_size)
    t = torch.full((batch_size,), 500)

    def run():
        with torch.inference_mode():
            return model(x, t).sample

    return run
