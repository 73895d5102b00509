"""Which of the T training timesteps a sampler visits, and where each step goes.

The three spacings are those of the diffusers schedulers, tabulated in Lin et al. 2024, "Common
Diffusion Noise Schedules and Sample Steps are Flawed", Table 2. Each diffusers scheduler makes
its own list from them (n steps, T training timesteps, rounding half to even as numpy):

DDPMScheduler, DDIMScheduler (`rule="diffusers"` for "ddpm"/"ddim", and every method with
`rule="shared"`), integers:
- "leading":  [0, r, ..., (n-1) r] reversed, r = T // n, plus `steps_offset`.
- "trailing": round(arange(T, 0, -T / n)) - 1, its first n values (starts at T - 1).
- "linspace": round(linspace(0, T - 1, n)) reversed (starts at T - 1, ends at 0).

DPMSolverMultistepScheduler ("dpmpp_2m"), integers, n + 1 points with the last (0) dropped, as
the solver's final step goes to sigma = 0 instead:
- "leading":  [0, r, ..., n r] reversed without its last, r = T // (n + 1), plus `steps_offset`.
- "trailing": as DDIM.
- "linspace": round(linspace(0, T - 1, n + 1)) reversed without its last.

EulerDiscreteScheduler, HeunDiscreteScheduler ("euler", "heun"):
- "leading", "trailing": as DDIM (diffusers holds these whole numbers as float32; jaxdiff keeps
  them int32, so a model_fn that indexes a table with t works as with the other methods).
- "linspace": linspace(0, T - 1, n) reversed, float32, not rounded (999, 908.18..., ... for
  n = 12); the sampler interpolates sigma between the table's entries and hands the model these
  fractional timesteps.

`steps_offset` is added to the "leading" lists only, as every one of these schedulers does.

Where a step goes (`next_timesteps`): DDIMScheduler steps from t to t - T // n (diffusers'
`prev_timestep`), which is not the next listed timestep for "linspace", nor for "trailing" when n
does not divide T; a negative target means the clean image (alphas_cumprod of 1 with
`set_alpha_to_one`, else alphas_cumprod[0]). Every other method steps to the next listed
timestep, and its last step to the clean image (sigma = 0).

`rule="shared"` is the cleaner variant kept as an option: every method visits the same integer
list (DDIM's) and steps from each listed timestep to the next, so all samplers see the same noise
levels and DDIM's steps are aligned with its list for every spacing.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from jaxdiff.validation import InputError, InputTypeError, check_choice

TIMESTEP_RULES = ("diffusers", "shared")

# diffusers' default `timestep_spacing` of each method's scheduler class, which a scheduler
# config that names no spacing gets (jaxdiff's own default is "leading" for every method).
DIFFUSERS_DEFAULT_SPACINGS = {"ddpm": "leading", "ddim": "leading", "dpmpp_2m": "linspace",
                              "euler": "linspace", "heun": "linspace"}

def _leading(num_train: int, num_steps: int, steps_offset: int) -> np.ndarray:
    step = num_train // num_steps
    return (np.arange(num_steps) * step).round()[::-1] + steps_offset


def _trailing(num_train: int, num_steps: int, steps_offset: int) -> np.ndarray:
    # diffusers writes np.arange(T, 0, -T / n); for some n (e.g. T=1000, n=61) float rounding
    # makes that one element longer, ending in -1. We take its first n elements.
    return np.round(np.arange(num_train, 0, -num_train / num_steps)[:num_steps]) - 1


def _linspace(num_train: int, num_steps: int, steps_offset: int) -> np.ndarray:
    return np.linspace(0, num_train - 1, num_steps).round()[::-1]


def _dpm_leading(num_train: int, num_steps: int, steps_offset: int) -> np.ndarray:
    step = num_train // (num_steps + 1)
    return (np.arange(num_steps + 1) * step).round()[::-1][:-1] + steps_offset


def _dpm_linspace(num_train: int, num_steps: int, steps_offset: int) -> np.ndarray:
    return np.linspace(0, num_train - 1, num_steps + 1).round()[::-1][:-1]


def _fractional_linspace(num_train: int, num_steps: int, steps_offset: int) -> np.ndarray:
    return np.linspace(0, num_train - 1, num_steps, dtype=np.float32)[::-1]


SPACINGS: dict[str, Callable[[int, int, int], np.ndarray]] = {
    "leading": _leading,
    "trailing": _trailing,
    "linspace": _linspace,
}

# the lists that differ from SPACINGS under rule "diffusers"
_METHOD_SPACINGS: dict[tuple[str, str], Callable[[int, int, int], np.ndarray]] = {
    ("dpmpp_2m", "leading"): _dpm_leading,
    ("dpmpp_2m", "linspace"): _dpm_linspace,
    ("euler", "linspace"): _fractional_linspace,
    ("heun", "linspace"): _fractional_linspace,
}


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def check_num_steps(num_steps, num_train: int) -> int:
    """num_steps must be a Python/numpy integer in [1, num_train]."""
    if not _is_int(num_steps):
        raise InputTypeError(f"num_steps must be an integer in [1, {num_train}]; got {num_steps!r} "
                             f"of type {type(num_steps).__name__}")
    if not 1 <= num_steps <= num_train:
        raise InputError(f"num_steps must be in [1, {num_train}] (the schedule's number of "
                         f"timesteps); got {num_steps}")
    return int(num_steps)


def _num_train(schedule) -> int:
    num_train = schedule if _is_int(schedule) else getattr(schedule, "num_timesteps", None)
    if not _is_int(num_train):
        raise InputTypeError(f"schedule must be a NoiseSchedule or an int number of timesteps; got "
                             f"{type(schedule).__name__}")
    return int(num_train)


def timesteps(schedule, num_steps: int, spacing: str = "leading", steps_offset: int = 0, *,
              method: str | None = None, rule: str = "diffusers") -> np.ndarray:
    """The descending timesteps a sampler with `num_steps` steps visits (the model's `t`).

    Args:
      schedule: a NoiseSchedule (only its number of timesteps T is used), or T itself as an int.
      num_steps: number of inference steps n, an integer in [1, T].
      spacing: "leading", "trailing" or "linspace" (see the module docstring).
      steps_offset: added to every "leading" timestep (diffusers' `steps_offset`, e.g. 1 for
        Stable Diffusion); ignored by the other spacings, as in diffusers.
      method: the sampler ("ddpm", "ddim", "dpmpp_2m", "euler", "heun"), whose diffusers
        scheduler makes the list; None gives the DDPM/DDIM list.
      rule: "diffusers" (each method's own list) or "shared" (the DDPM/DDIM list for every
        method).

    Returns:
      numpy array of shape (num_steps,), strictly descending, every value in [0, T): int32, or
      float32 for the fractional "linspace" lists of "euler"/"heun" under rule "diffusers".

    Example:
      >>> timesteps(1000, 10).tolist()
      [900, 800, 700, 600, 500, 400, 300, 200, 100, 0]
      >>> timesteps(1000, 10, "trailing").tolist()
      [999, 899, 799, 699, 599, 499, 399, 299, 199, 99]
      >>> timesteps(1000, 10, "linspace").tolist()
      [999, 888, 777, 666, 555, 444, 333, 222, 111, 0]
      >>> timesteps(1000, 10, "linspace", method="dpmpp_2m").tolist()
      [999, 899, 799, 699, 599, 500, 400, 300, 200, 100]
      >>> timesteps(1000, 4, "linspace", method="euler").tolist()
      [999.0, 666.0, 333.0, 0.0]
      >>> [round(float(t), 2) for t in timesteps(1000, 12, "linspace", method="heun")[:3]]
      [999.0, 908.18, 817.36]

    References:
      Lin et al. 2024, Table 2; diffusers DDIMScheduler, DPMSolverMultistepScheduler and
      EulerDiscreteScheduler `set_timesteps`.
    """
    num_train = _num_train(schedule)
    check_choice("spacing", spacing, SPACINGS)
    check_choice("timestep rule", rule, TIMESTEP_RULES)
    if method is not None:
        check_choice("sampler", method, DIFFUSERS_DEFAULT_SPACINGS)
    num_steps = check_num_steps(num_steps, num_train)
    if not _is_int(steps_offset) or steps_offset < 0:
        raise InputError(f"steps_offset must be an integer >= 0; got {steps_offset!r}")
    own = rule == "diffusers" and method is not None
    make = _METHOD_SPACINGS.get((method, spacing), SPACINGS[spacing]) if own else SPACINGS[spacing]
    ts = make(num_train, num_steps, int(steps_offset))
    who = f" for {method}" if own else ""
    if ts.min() < 0 or ts.max() > num_train - 1:
        raise InputError(f"spacing {spacing!r}{who} with num_steps={num_steps} and steps_offset="
                         f"{steps_offset} gives timesteps from {ts.min():g} to {ts.max():g}, "
                         f"outside [0, {num_train}); use a smaller steps_offset or num_steps")
    if np.any(np.diff(ts) >= 0):
        raise InputError(f"spacing {spacing!r}{who} with num_steps={num_steps} repeats timesteps "
                         f"(T={num_train}); use fewer steps or another spacing")
    return ts if ts.dtype == np.float32 else ts.astype(np.int32)


def next_timesteps(ts: np.ndarray, num_train: int, method: str, rule: str = "diffusers"
                   ) -> np.ndarray:
    """Where each step of `ts` goes: the timestep of the state it returns, -1 for the clean image.

    DDIM under rule "diffusers" steps to t - T // n (diffusers' DDIMScheduler), any negative
    target written as -1; every other case steps to the next listed timestep, the last to -1.

    Args:
      ts: the run's timesteps from `timesteps`, shape (n,).
      num_train: T.
      method, rule: as for `timesteps`.

    Returns:
      array of ts's dtype and shape.
    """
    ts = np.asarray(ts)
    if method == "ddim" and rule == "diffusers":
        target = ts - num_train // len(ts)
        return np.where(target >= 0, target, -1).astype(ts.dtype)
    return np.concatenate([ts[1:], [-1]]).astype(ts.dtype)
