"""Samplers for flow-matching models (velocity v = noise - x0 along x_u = (1 - u) x0 + u noise).

The sigmas (values of u) are those of diffusers' FlowMatchEulerDiscreteScheduler (defaults,
`num_train_timesteps` 1000): `num_steps` points of a linspace from sigma_max = 1 to the
scheduler's sigma_min, each shifted, then a final 0. The shift is static
(shift u / (1 + (shift - 1) u), SD3) or, with `mu`, Flux's dynamic exp(mu) / (exp(mu) + 1/u - 1);
`flux_mu` gives mu for an image's token count. The model sees the float32 timestep 1000 u.

"flow_euler": x <- x + (u_next - u) v, the scheduler's update. "flow_heun": Heun's trapezoid
rule, the velocity at the Euler prediction averaged with v (every step, the last one included:
the velocity is defined at u = 0). Each is one `lax.scan`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff.sampling.base import make_denoise
from jaxdiff.validation import InputError, check_choice, check_images

FLOW_METHODS = ("flow_euler", "flow_heun")
NUM_TRAIN_TIMESTEPS = 1000


def flux_mu(image_seq_len: int, base_seq_len: int = 256, max_seq_len: int = 4096,
            base_shift: float = 0.5, max_shift: float = 1.15) -> float:
    """Flux's mu for `image_seq_len` tokens: linear from base_shift at base_seq_len to max_shift
    at max_seq_len (diffusers' `calculate_shift`)."""
    m = (max_shift - base_shift) / (max_seq_len - base_seq_len)
    return image_seq_len * m + base_shift - m * base_seq_len


def flow_sigmas(num_steps: int, shift: float = 1.0, mu: float | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
    """(sigmas (num_steps + 1,), timesteps (num_steps,)), float32, as FlowMatchEulerDiscrete-
    Scheduler(shift=shift, use_dynamic_shifting=mu is not None).set_timesteps(num_steps, mu=mu).
    """
    if isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)) \
            or num_steps < 1:
        raise InputError(f"num_steps must be an integer >= 1; got {num_steps!r}")
    if mu is None and not float(shift) > 0:
        raise InputError(f"flow shift must be > 0; got {shift!r}")
    n = NUM_TRAIN_TIMESTEPS
    # the scheduler's training sigmas are float32 and, without dynamic shifting, shifted once
    # already: its sigma_min is the shifted 1/n, which set_timesteps then shifts again
    train = np.linspace(1, n, n, dtype=np.float32)[::-1] / np.float32(n)
    if mu is None:
        train = np.float32(shift) * train / (1 + (np.float32(shift) - 1) * train)
    sigma_max, sigma_min = float(train[0]), float(train[-1])
    sig = np.linspace(sigma_max * n, sigma_min * n, num_steps) / n
    if mu is None:
        sig = shift * sig / (1 + (shift - 1) * sig)
    else:
        sig = np.exp(mu) / (np.exp(mu) + (1 / sig - 1))
    sig = sig.astype(np.float32)
    return np.append(sig, np.float32(0.0)), sig * np.float32(n)


@functools.partial(jax.jit, static_argnames=("method", "return_trajectory"))
def _run(model_fn, x_T, sigmas, labels, null_label, guidance_scale, *, method,
         return_trajectory):
    # make_denoise with prediction "sample" at alpha = sigma = 1 returns the guided model output
    # itself as its first value: one guidance path for every sampler
    denoise = make_denoise(model_fn, "sample", labels=labels, null_label=null_label,
                           guidance_scale=guidance_scale)
    one = jnp.ones((), jnp.float32)

    def velocity(x, u):
        return denoise(x, (u * NUM_TRAIN_TIMESTEPS).astype(jnp.float32), one, one)[0]

    def body(x, pair):
        u, u_next = pair
        v = velocity(x, u)
        x_euler = (x + (u_next - u) * v).astype(x.dtype)
        if method == "flow_euler":
            x_next = x_euler
        else:
            x_next = (x + (u_next - u) * 0.5 * (v + velocity(x_euler, u_next))).astype(x.dtype)
        return x_next, ((x, x - u * v) if return_trajectory else None)

    x0, ys = jax.lax.scan(body, x_T, (sigmas[:-1], sigmas[1:]))
    if not return_trajectory:
        return x0
    return x0, {"x_t": ys[0], "pred_x0": ys[1],
                "timesteps": (sigmas[:-1] * NUM_TRAIN_TIMESTEPS).astype(jnp.float32)}


def sample_flow(model_fn, x_T, *, method: str = "flow_euler", num_steps: int, shift: float = 1.0,
                mu: float | None = None, labels=None, null_label=None, guidance_scale=1.0,
                return_trajectory: bool = False):
    """Integrates a flow-matching model from noise x_T (u = 1) to an image (u = 0).

    Args:
      model_fn: `model_fn(x_u, t)` (or `(x_u, t, labels)`) -> velocity noise - x0, t float32
        (B,) = 1000 u.
      x_T: standard normal noise, float NHWC (B, H, W, C) (used as it is: sigma_max is 1).
      method: "flow_euler" or "flow_heun".
      num_steps: number of steps (Heun calls the model twice per step).
      shift, mu: the static shift, or Flux's dynamic shift parameter mu (see `flow_sigmas`).
      labels, null_label, guidance_scale: classifier-free guidance on the velocity, as in
        `jaxdiff.sampling.sample`.
      return_trajectory: also return {"x_t": states before each step (num_steps, *x_T.shape),
        "pred_x0": x_u - u v there, "timesteps": 1000 u (num_steps,)}.

    Returns:
      x_0 of x_T's shape (and the trajectory).
    """
    from jaxdiff.sampling.checks import check_guidance
    from jaxdiff.sampling.loop import _as_partial

    check_choice("flow sampler", method, FLOW_METHODS)
    check_images(x_T, "x_T")
    sigmas, _ = flow_sigmas(num_steps, shift, mu)
    guided = check_guidance(labels, null_label, guidance_scale, x_T.shape[0])
    dtype = jax.dtypes.canonicalize_dtype(jnp.promote_types(x_T.dtype, jnp.float32))
    return _run(_as_partial(model_fn), jnp.asarray(x_T, dtype), jnp.asarray(sigmas),
                jnp.asarray(labels, jnp.int32) if guided else None,
                jnp.asarray(null_label, jnp.int32) if guided else None,
                jnp.asarray(guidance_scale, jnp.float32) if guided else None,
                method=method, return_trajectory=bool(return_trajectory))
