"""A diffusers `scheduler/scheduler_config.json` -> jaxdiff's noise schedule and sampler options.

Choosing a jaxdiff method behaves as `<Scheduler>.from_pretrained(folder/scheduler)` does in
diffusers for that method's scheduler class (`METHOD_CLASSES`): a key the file names is used, a
key it does not name takes that class's default (SD 1.x folders name no `timestep_spacing`, so
DDIM gets "leading" and DPM-Solver++ / Euler "linspace"; DDIM/DDPM `clip_sample` defaults to
True), and a key the class does not take is ignored (as diffusers ignores `skip_prk_steps` when a
PNDM config builds a DDIMScheduler). Every key the class takes either maps onto jaxdiff or, where
its value changes the result and jaxdiff does not implement it, is refused with an InputError
(e.g. `use_karras_sigmas`, `final_sigmas_type="sigma_min"`, `solver_type="heun"`).

Without a method, the folder's own class decides: DDPMScheduler, DDIMScheduler,
DPMSolverMultistepScheduler, EulerDiscreteScheduler and HeunDiscreteScheduler are jaxdiff's
ddpm, ddim, dpmpp_2m, euler and heun. A scheduler jaxdiff does not have (PNDMScheduler in SD 1.x
folders, LMS, UniPC, ...) becomes DPM-Solver++(2M), as DPMSolverMultistepScheduler.from_pretrained
would build it, and `SamplerSettings.note` says so.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jaxdiff.schedules import NoiseSchedule, from_betas, make_schedule
from jaxdiff.validation import InputError, InputFileNotFoundError, check_choice

METHOD_CLASSES = {"ddpm": "DDPMScheduler", "ddim": "DDIMScheduler",
                  "dpmpp_2m": "DPMSolverMultistepScheduler", "euler": "EulerDiscreteScheduler",
                  "heun": "HeunDiscreteScheduler"}
CLASS_METHODS = {cls: method for method, cls in METHOD_CLASSES.items()}
FALLBACK_METHOD = "dpmpp_2m"

_SCHEDULE_KEYS = {"num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02,
                      "beta_schedule": "linear", "trained_betas": None, "prediction_type": "epsilon",
                      "steps_offset": 0}
_CLIPPING = {"clip_sample": True, "clip_sample_range": 1.0, "thresholding": False,
                 "dynamic_thresholding_ratio": 0.995, "sample_max_value": 1.0}
_SIGMA_VARIANTS = {"use_karras_sigmas": False, "use_exponential_sigmas": False,
                       "use_beta_sigmas": False}

# Each class's constructor keys and defaults (diffusers 0.42): what a file that omits a key gets.
CLASS_DEFAULTS: dict[str, dict[str, Any]] = {
    "DDPMScheduler": dict(_SCHEDULE_KEYS, **_CLIPPING, variance_type="fixed_small",
                          timestep_spacing="leading", rescale_betas_zero_snr=False),
    "DDIMScheduler": dict(_SCHEDULE_KEYS, **_CLIPPING, set_alpha_to_one=True,
                          timestep_spacing="leading", rescale_betas_zero_snr=False),
    "DPMSolverMultistepScheduler": dict(
        _SCHEDULE_KEYS, **_SIGMA_VARIANTS, solver_order=2, thresholding=False,
        dynamic_thresholding_ratio=0.995, sample_max_value=1.0, algorithm_type="dpmsolver++",
        solver_type="midpoint", lower_order_final=True, euler_at_final=False,
        use_lu_lambdas=False, use_flow_sigmas=False, flow_shift=1.0, final_sigmas_type="zero",
        lambda_min_clipped=-math.inf, variance_type=None, timestep_spacing="linspace",
        rescale_betas_zero_snr=False, use_dynamic_shifting=False,
        time_shift_type="exponential"),
    "EulerDiscreteScheduler": dict(
        _SCHEDULE_KEYS, **_SIGMA_VARIANTS, interpolation_type="linear", sigma_min=None,
        sigma_max=None, timestep_spacing="linspace", timestep_type="discrete",
        rescale_betas_zero_snr=False, final_sigmas_type="zero"),
    "HeunDiscreteScheduler": dict(
        _SCHEDULE_KEYS, **_SIGMA_VARIANTS, beta_start=0.00085, beta_end=0.012,
        clip_sample=False, clip_sample_range=1.0, timestep_spacing="linspace"),
}

# Values jaxdiff implements, for keys where other values change the numbers. Keys of a class that
# are absent here and from `_MAPPED` have no effect with these values (e.g. DPM-Solver++'s
# lower_order_final and euler_at_final: order 2 with final sigma 0 always takes a first-order last
# step; sigma_min/sigma_max only bound Karras-type sigmas; flow_shift and time_shift_type only
# act with flow sigmas / dynamic shifting).
_ONLY: dict[str, tuple] = {
    "use_karras_sigmas": (False,), "use_exponential_sigmas": (False,),
    "use_beta_sigmas": (False,), "use_lu_lambdas": (False,), "use_flow_sigmas": (False,),
    "use_dynamic_shifting": (False,), "solver_order": (2,), "algorithm_type": ("dpmsolver++",),
    "solver_type": ("midpoint",), "final_sigmas_type": ("zero",),
    "lambda_min_clipped": (-math.inf,), "interpolation_type": ("linear",),
    "timestep_type": ("discrete",), "prediction_type": ("epsilon", "v_prediction", "sample"),
    "timestep_spacing": ("leading", "trailing", "linspace"),
}
_VARIANCE_TYPES = {"DDPMScheduler": ("fixed_small", "fixed_large"),
                   "DPMSolverMultistepScheduler": (None,)}
_BETA_SCHEDULES = {"linear": "linear", "scaled_linear": "scaled_linear",
                   "squaredcos_cap_v2": "cosine", "sigmoid": "sigmoid"}
_CLASS_BETA_SCHEDULES = {"DDPMScheduler": ("linear", "scaled_linear", "squaredcos_cap_v2",
                                           "sigmoid")}
_IGNORED_BY_DIFFUSERS = ("_class_name", "_diffusers_version", "_use_default_values")


@dataclasses.dataclass(frozen=True)
class SamplerSettings:
    """What a scheduler config means for `jaxdiff.sampling.sample`.

    Attributes:
      method: the jaxdiff sampler ("ddpm", "ddim", "dpmpp_2m", "euler", "heun").
      scheduler_class: the diffusers class whose behaviour these settings follow.
      folder_class: the `_class_name` of the file.
      schedule: the NoiseSchedule (betas of the file, float32 arrays).
      options: keyword arguments for `sample` (prediction_type, spacing, steps_offset,
        clip_sample, clip_sample_range, thresholding, dynamic_thresholding_ratio,
        set_alpha_to_one, variance_type).
      note: a sentence for the user when the folder's own scheduler was replaced, else None.
    """

    method: str
    scheduler_class: str
    folder_class: str
    schedule: NoiseSchedule
    options: dict
    note: str | None = None

    @property
    def prediction_type(self) -> str:
        return self.options["prediction_type"]


def read_scheduler_config(folder) -> dict:
    """The dict of `folder/scheduler_config.json` (folder: a pipeline's `scheduler/`)."""
    path = Path(folder) / "scheduler_config.json"
    if not path.is_file():
        raise InputFileNotFoundError(f"no scheduler config {str(path)!r}: a diffusers pipeline "
                                     f"folder has scheduler/scheduler_config.json")
    try:
        config = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"cannot read the scheduler config {str(path)!r}: {e}") from None
    if not isinstance(config, dict):
        raise InputError(f"the scheduler config {str(path)!r} is not a JSON object")
    return config


def _refuse(cls: str, key: str, value, accepted, why: str = "") -> InputError:
    shown = ", ".join(repr(v) for v in accepted)
    return InputError(f"scheduler config key {key}={value!r} ({cls}) is not supported by jaxdiff"
                      f"{why}; accepted: {shown}")


def _schedule(config: Mapping, cls: str) -> NoiseSchedule:
    num_train = config["num_train_timesteps"]
    if isinstance(num_train, bool) or not isinstance(num_train, int) or num_train < 2:
        raise InputError(f"scheduler config num_train_timesteps must be an integer >= 2; got "
                         f"{num_train!r}")
    if config["trained_betas"] is not None:
        return from_betas(config["trained_betas"])
    name = config["beta_schedule"]
    allowed = _CLASS_BETA_SCHEDULES.get(cls, ("linear", "scaled_linear", "squaredcos_cap_v2"))
    if name not in allowed:
        raise _refuse(cls, "beta_schedule", name, allowed)
    options = {}
    if name in ("linear", "scaled_linear", "sigmoid"):
        options = {"beta_start": float(config["beta_start"]),
                       "beta_end": float(config["beta_end"])}
    return make_schedule(_BETA_SCHEDULES[name], num_train,
                         rescale_to_zero_terminal_snr=bool(
                             config.get("rescale_betas_zero_snr", False)),
                         **options)


def sampler_settings(config: Mapping, method: str | None = None) -> SamplerSettings:
    """Maps a diffusers scheduler config onto jaxdiff's schedule and `sample` options.

    Args:
      config: the dict of a `scheduler_config.json` (with its `_class_name`).
      method: a jaxdiff sampler name, or None for the folder's own scheduler (DPM-Solver++(2M)
        where jaxdiff has no counterpart, with a `note`).

    Returns:
      SamplerSettings; `sample(model_fn, s.schedule, x_T, method=s.method, num_steps=n,
      **s.options)` then steps as diffusers' scheduler of that class built from this config.

    Raises:
      InputError: for a config that is not a scheduler config, or a key whose value jaxdiff does
        not implement (named with the accepted values).

    Example:
      >>> sd15 = {"_class_name": "PNDMScheduler", "beta_schedule": "scaled_linear",
      ...         "beta_start": 0.00085, "beta_end": 0.012, "steps_offset": 1,
      ...         "set_alpha_to_one": False, "skip_prk_steps": True, "clip_sample": False}
      >>> s = sampler_settings(sd15)
      >>> s.method, s.options["spacing"], s.options["steps_offset"]
      ('dpmpp_2m', 'linspace', 1)
      >>> sampler_settings(sd15, "ddim").options["spacing"]
      'leading'
    """
    if not isinstance(config, Mapping):
        raise InputError(f"a scheduler config must be a dict; got {type(config).__name__}")
    folder_class = config.get("_class_name")
    if not isinstance(folder_class, str) or not folder_class.endswith("Scheduler"):
        raise InputError(f"not a diffusers scheduler config: its _class_name is "
                         f"{folder_class!r} (expected e.g. 'DDIMScheduler' or 'PNDMScheduler')")
    note = None
    if method is None:
        method = CLASS_METHODS.get(folder_class)
        if method is None:
            method = FALLBACK_METHOD
            note = (f"the folder's scheduler {folder_class} has no jaxdiff counterpart; sampling "
                    f"with DPM-Solver++(2M) (method 'dpmpp_2m', configured as diffusers' "
                    f"DPMSolverMultistepScheduler.from_pretrained would from the same file)")
    check_choice("sampler", method, METHOD_CLASSES)
    cls = METHOD_CLASSES[method]
    defaults = CLASS_DEFAULTS[cls]
    full = {key: config.get(key, default) for key, default in defaults.items()}
    for key, accepted in _ONLY.items():
        if key in full and full[key] not in accepted:
            raise _refuse(cls, key, full[key], accepted)
    if "variance_type" in full and full["variance_type"] not in _VARIANCE_TYPES[cls]:
        raise _refuse(cls, "variance_type", full["variance_type"], _VARIANCE_TYPES[cls])
    if full["steps_offset"] is None or isinstance(full["steps_offset"], bool) \
            or not isinstance(full["steps_offset"], int) or full["steps_offset"] < 0:
        raise InputError(f"scheduler config steps_offset must be an integer >= 0; got "
                         f"{full['steps_offset']!r}")
    thresholding = bool(full.get("thresholding", False))
    options = {
        "prediction_type": full["prediction_type"], "spacing": full["timestep_spacing"],
        "steps_offset": int(full["steps_offset"]),
        "clip_sample": bool(full.get("clip_sample", False)),
        "clip_sample_range": float(full["sample_max_value"] if thresholding
                                else full.get("clip_sample_range", 1.0)),
        "thresholding": thresholding,
        "dynamic_thresholding_ratio": float(full.get("dynamic_thresholding_ratio", 0.995)),
        "set_alpha_to_one": bool(full.get("set_alpha_to_one", True)),
        "variance_type": full.get("variance_type") or "fixed_small"}
    return SamplerSettings(method=method, scheduler_class=cls, folder_class=folder_class,
                           schedule=_schedule(full, cls), options=options, note=note)
