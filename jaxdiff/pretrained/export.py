"""A jaxdiff-trained pixel run -> a diffusers `DDPMPipeline` folder (safetensors, no torch).

The folder holds `model_index.json`, `unet/` (config.json of a UNet2DModel with the same
architecture, and the EMA parameters as `diffusion_pytorch_model.safetensors`) and `scheduler/`
(a DDPMScheduler config with the run's noise schedule and prediction type), so that
`diffusers.DDPMPipeline.from_pretrained(folder)` loads and runs it, and jaxdiff's own loader
reads it back (`jaxdiff sample --pretrained`).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from jaxdiff.validation import InputError

WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
# jaxdiff schedule name -> diffusers beta_schedule (same betas; see jaxdiff.schedules)
BETA_SCHEDULES = {"linear": "linear", "scaled_linear": "scaled_linear",
                  "cosine": "squaredcos_cap_v2", "sigmoid": "sigmoid"}
_BETA_RANGES = {"linear": (1e-4, 0.02), "scaled_linear": (0.00085, 0.012),
                "sigmoid": (1e-4, 0.02)}
DIFFUSERS_VERSION = "0.42.0"


def unet_tensors(model_kwargs: Mapping, params) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(UNet2DModel config.json dict, {diffusers name: float32 array}) of a jaxdiff UNet.

    Raises InputError / WeightsError for a UNet diffusers cannot express or params that do not
    belong to `model_kwargs`.
    """
    from jaxdiff.pretrained.convert import export_tensors
    from jaxdiff.pretrained.pixel_unet import (
        abstract_unet,
        config_from_unet_kwargs,
        unet_kwargs_from_config,
    )
    from jaxdiff.pretrained.pixel_unet_keys import name_table, split_qkv

    config = {"_class_name": "UNet2DModel", "_diffusers_version": DIFFUSERS_VERSION,
              **config_from_unet_kwargs(model_kwargs)}
    kwargs = unet_kwargs_from_config(config)  # the loader's reading of the config we write
    table = name_table(abstract_unet(kwargs)[1])
    tensors = export_tensors(params, table.__getitem__, sorted(table), what="the UNet")
    return config, split_qkv(tensors)


def scheduler_config(run_config) -> dict[str, Any]:
    """The DDPMScheduler config of a run's noise schedule and prediction type (the images of
    DDPMPipeline are then those of jaxdiff's ddpm sampler with the run's spacing)."""
    d = run_config.diffusion
    name = d.schedule
    if name not in BETA_SCHEDULES:
        raise InputError(f"cannot export schedule {name!r}: diffusers names "
                         f"{sorted(BETA_SCHEDULES)}")
    start, end = _BETA_RANGES.get(name, (1e-4, 0.02))
    return {"_class_name": "DDPMScheduler", "_diffusers_version": DIFFUSERS_VERSION,
            "num_train_timesteps": int(d.num_timesteps), "beta_schedule": BETA_SCHEDULES[name],
            "beta_start": start, "beta_end": end, "trained_betas": None,
            "prediction_type": d.prediction_type, "variance_type": "fixed_small",
            "clip_sample": False, "timestep_spacing": run_config.sampling.spacing,
            "steps_offset": 0, "rescale_betas_zero_snr": bool(d.rescale_zero_terminal_snr)}


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {str(out)!r} is a file; give a new or empty folder")
    if out.is_dir() and any(out.iterdir()):
        raise InputError(f"--out {str(out)!r} is not empty: jaxdiff export never overwrites; "
                         f"give a new or empty folder")


def write_pipeline_folder(out, model_kwargs: Mapping, params, run_config) -> Path:
    """Writes the DDPMPipeline folder for a UNet and a run config; refuses a non-empty `out`.

    Everything is written into a temporary folder beside `out` and moved into place at the end,
    so an interrupted export leaves no half-written folder.
    """
    from safetensors.numpy import save_file

    out = Path(out)
    _check_out(out)
    config, tensors = unet_tensors(model_kwargs, params)
    scheduler = scheduler_config(run_config)
    out.absolute().parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.absolute().parent))
    try:
        (staging / "unet").mkdir()
        (staging / "scheduler").mkdir()
        save_file(tensors, str(staging / "unet" / WEIGHTS_NAME), metadata={"format": "pt"})
        (staging / "unet" / "config.json").write_text(json.dumps(config, indent=2))
        (staging / "scheduler" / "scheduler_config.json").write_text(
            json.dumps(scheduler, indent=2))
        index = {"_class_name": "DDPMPipeline", "_diffusers_version": DIFFUSERS_VERSION,
                 "unet": ["diffusers", "UNet2DModel"], "scheduler": ["diffusers", "DDPMScheduler"]}
        (staging / "model_index.json").write_text(json.dumps(index, indent=2))
        _check_out(out)  # still free?
        if out.is_dir():
            out.rmdir()  # empty (checked): replaced by the finished folder
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def export_run(workdir, out, *, step: int | None = None) -> Path:
    """Writes the EMA parameters of the jaxdiff run in `workdir` (its latest checkpoint, or
    `step`) as a diffusers DDPMPipeline folder `out` (which must be new or empty)."""
    from jaxdiff.generate import load_run

    _check_out(Path(out))
    config, _, params, _ = load_run(workdir, step)
    return write_pipeline_folder(out, dict(config.model), params, config)
