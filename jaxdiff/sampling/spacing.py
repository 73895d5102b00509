"""Which of the T training timesteps a sampler visits: the "spacing" of the inference steps.

The three rules are those of the diffusers schedulers (DDIMScheduler, DDPMScheduler,
EulerDiscreteScheduler), tabulated in Lin et al. 2024, "Common Diffusion Noise Schedules and
Sample Steps are Flawed", Table 2:

- "leading":  step = T // n; [0, step, ..., (n-1) step] reversed, plus `steps_offset`.
- "trailing": round(np.arange(T, 0, -T / n)) - 1, its first n values (starts at T - 1).
- "linspace": round(linspace(0, T - 1, n)) reversed (starts at T - 1, ends at 0).

Rounding is numpy's round-half-to-even, as in diffusers.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from jaxdiff.validation import check_choice


def _leading(num_train: int, num_steps: int, steps_offset: int) -> np.ndarray:
    step = num_train // num_steps
    return (np.arange(num_steps) * step).round()[::-1] + steps_offset


def _trailing(num_train: int, num_steps: int, steps_offset: int) -> np.ndarray:
    # diffusers writes np.arange(T, 0, -T / n); for some n (e.g. T=1000, n=61) float rounding
    # makes that one element longer, ending in -1. We take its first n elements.
    return np.round(np.arange(num_train, 0, -num_train / num_steps)[:num_steps]) - 1


def _linspace(num_train: int, num_steps: int, steps_offset: int) -> np.ndarray:
    return np.linspace(0, num_train - 1, num_steps).round()[::-1]


SPACINGS: dict[str, Callable[[int, int, int], np.ndarray]] = {
    "leading": _leading,
    "trailing": _trailing,
    "linspace": _linspace,
}


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def check_num_steps(num_steps, num_train: int) -> int:
    """num_steps must be a Python/numpy integer in [1, num_train]."""
    if not _is_int(num_steps):
        raise TypeError(f"num_steps must be an integer in [1, {num_train}]; got {num_steps!r} "
                        f"of type {type(num_steps).__name__}")
    if not 1 <= num_steps <= num_train:
        raise ValueError(f"num_steps must be in [1, {num_train}] (the schedule's number of "
                         f"timesteps); got {num_steps}")
    return int(num_steps)


def timesteps(schedule, num_steps: int, spacing: str = "leading",
              steps_offset: int = 0) -> np.ndarray:
    """The descending int32 timesteps a sampler with `num_steps` steps visits.

    Args:
      schedule: a NoiseSchedule (only its number of timesteps T is used), or T itself as an int.
      num_steps: number of inference steps n, an integer in [1, T].
      spacing: "leading", "trailing" or "linspace" (see the module docstring).
      steps_offset: added to every "leading" timestep (diffusers' `steps_offset`, e.g. 1 for
        Stable Diffusion); ignored by the other spacings, as in diffusers.

    Returns:
      int32 numpy array of shape (num_steps,), descending, every value in [0, T).

    Example:
      >>> timesteps(1000, 10).tolist()
      [900, 800, 700, 600, 500, 400, 300, 200, 100, 0]
      >>> timesteps(1000, 10, "trailing").tolist()
      [999, 899, 799, 699, 599, 499, 399, 299, 199, 99]
      >>> timesteps(1000, 10, "linspace").tolist()
      [999, 888, 777, 666, 555, 444, 333, 222, 111, 0]

    References:
      Lin et al. 2024, Table 2; diffusers DDIMScheduler.set_timesteps.
    """
    num_train = schedule if _is_int(schedule) else getattr(schedule, "num_timesteps", None)
    if not _is_int(num_train):
        raise TypeError(f"schedule must be a NoiseSchedule or an int number of timesteps; got "
                        f"{type(schedule).__name__}")
    num_train = int(num_train)
    check_choice("spacing", spacing, SPACINGS)
    num_steps = check_num_steps(num_steps, num_train)
    if not _is_int(steps_offset) or steps_offset < 0:
        raise ValueError(f"steps_offset must be an integer >= 0; got {steps_offset!r}")
    ts = SPACINGS[spacing](num_train, num_steps, int(steps_offset)).astype(np.int64)
    if ts.min() < 0 or ts.max() >= num_train:
        raise ValueError(f"spacing {spacing!r} with num_steps={num_steps} and steps_offset="
                         f"{steps_offset} gives timesteps from {ts.min()} to {ts.max()}, outside "
                         f"[0, {num_train}); use a smaller steps_offset or num_steps")
    return ts.astype(np.int32)
