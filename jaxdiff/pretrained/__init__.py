"""diffusers / transformers folders <-> jaxdiff params (safetensors only; no torch, no pickle).

`load_component(folder)` reads one component folder (config.json + weights), builds the jaxdiff
model its config's `_class_name` (or transformers `architectures`) names, and fills every
parameter from the weights, checked name by name and shape by shape:

| class name | jaxdiff model |
|---|---|
| UNet2DModel | `jaxdiff.models.UNet` (pixel DDPM checkpoints) |
| UNet2DConditionModel | `jaxdiff.models.unet_condition.UNet2DCondition` |
| AutoencoderKL | `jaxdiff.models.autoencoder.AutoencoderKL` |
| CLIPTextModel | `jaxdiff.models.clip_text.CLIPTextModel` |
| CLIPTextModelWithProjection | `jaxdiff.models.clip_text.CLIPTextModel` (with its projection) |

Example:
  >>> from jaxdiff.pretrained import load_component            # doctest: +SKIP
  >>> unet = load_component("stable-diffusion-v1-5/unet")       # doctest: +SKIP
  >>> unet.kwargs["cross_attention_dim"]                        # doctest: +SKIP
  768
"""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path
from typing import Any

from jaxdiff.pretrained.convert import WeightsError, convert_tensors
from jaxdiff.pretrained.files import read_config, read_weights
from jaxdiff.validation import InputError, check_choice

__all__ = ["COMPONENTS", "LoadedComponent", "WeightsError", "component_class", "load_component"]

DTYPES = ("float32", "bfloat16")


@dataclasses.dataclass(frozen=True)
class Component:
    """How to build and fill one model class: dotted names, imported lazily.

    kwargs_from_config: config.json dict -> constructor kwargs (refuses what is not supported).
    abstract: kwargs -> (graphdef, params as ShapeDtypeStructs).
    make_key_map: kwargs -> key_map(torch name) -> (path, kind) | None.
    prepare: optional tensors -> tensors applied before conversion (e.g. fusing q, k, v).
    """

    kwargs_from_config: str
    abstract: str
    make_key_map: str
    prepare: str | None = None

    def resolve(self, name: str):
        module, _, attr = getattr(self, name).rpartition(".")
        return getattr(importlib.import_module(module), attr)


COMPONENTS: dict[str, Component] = {
    "UNet2DModel": Component("jaxdiff.pretrained.pixel_unet.unet_kwargs_from_config",
                             "jaxdiff.pretrained.pixel_unet.abstract_unet",
                             "jaxdiff.pretrained.pixel_unet_keys.make_key_map",
                             prepare="jaxdiff.pretrained.pixel_unet_keys.fuse_qkv"),
    "UNet2DConditionModel": Component(
        "jaxdiff.models.diffusers_config.unet_condition_kwargs_from_config",
        "jaxdiff.models.unet_condition.abstract_unet_condition",
        "jaxdiff.pretrained.unet_condition_keys.make_key_map"),
    "AutoencoderKL": Component("jaxdiff.models.diffusers_config.autoencoder_kwargs_from_config",
                               "jaxdiff.models.autoencoder.abstract_autoencoder",
                               "jaxdiff.pretrained.autoencoder_keys.make_key_map"),
    "CLIPTextModel": Component("jaxdiff.models.clip_text.clip_text_kwargs_from_config",
                               "jaxdiff.models.clip_text.abstract_clip_text",
                               "jaxdiff.pretrained.clip_text_keys.make_key_map"),
}
# transformers' CLIPTextModelWithProjection (SD 2 / SDXL second encoders): the same module,
# whose kwargs read `architectures` and add the text projection.
COMPONENTS["CLIPTextModelWithProjection"] = COMPONENTS["CLIPTextModel"]


@dataclasses.dataclass(frozen=True)
class LoadedComponent:
    """A loaded model: `graphdef` (static) and `params` (nested dict of arrays) as the jaxdiff
    models use them, the constructor `kwargs`, the folder's `config` and its class name `kind`."""

    graphdef: Any
    params: Any
    kwargs: dict
    config: dict
    kind: str


def component_class(config: dict, folder) -> str:
    """The class name a config.json describes: diffusers' `_class_name`, or transformers'
    `architectures[0]`."""
    name = config.get("_class_name")
    if name is None and isinstance(config.get("architectures"), list) and config["architectures"]:
        name = config["architectures"][0]
    if name is None and config.get("model_type") == "clip_text_model":
        name = "CLIPTextModel"
    if name not in COMPONENTS:
        raise InputError(f"{str(folder)!r}: config.json describes a {name!r}, which jaxdiff cannot "
                         f"load; it loads {sorted(COMPONENTS)}")
    return name


def load_component(folder, *, variant: str | None = None, dtype: str = "float32",
                   kind: str | None = None) -> LoadedComponent:
    """Loads one diffusers/transformers component folder into a jaxdiff model.

    Args:
      folder: the folder holding config.json and `*.safetensors` (or a shard index).
      variant: pick `<name>.<variant>.safetensors` (e.g. "fp16"); the plain file when None.
      dtype: "float32" or "bfloat16": the parameters' dtype and the network's compute dtype
        (outputs stay float32).
      kind: the class name to expect (checked against the config) or None to take the config's.

    Returns:
      LoadedComponent(graphdef, params, kwargs, config, kind).

    Raises:
      InputError / WeightsError: no such folder, an unsupported class or config value, pickle-only
        or damaged weights, missing / unexpected / mis-shaped tensors. Nothing is half-loaded.
    """
    check_choice("dtype", dtype, DTYPES)
    folder = Path(folder)
    config = read_config(folder)
    name = component_class(config, folder)
    if kind is not None and name != kind:
        raise InputError(f"{str(folder)!r} holds a {name}, not the {kind} expected there")
    component = COMPONENTS[name]
    kwargs = component.resolve("kwargs_from_config")(config)
    if dtype != "float32":  # every registered model takes both: compute in `dtype` too
        kwargs = {**kwargs, "dtype": dtype, "param_dtype": dtype}
    graphdef, target = component.resolve("abstract")(kwargs)
    tensors = read_weights(folder, variant)
    if component.prepare is not None:
        tensors = component.resolve("prepare")(tensors)
    params = convert_tensors(tensors, component.resolve("make_key_map")(kwargs), target,
                             what=repr(str(folder)), dtype=dtype)
    return LoadedComponent(graphdef=graphdef, params=params, kwargs=kwargs, config=config,
                           kind=name)
