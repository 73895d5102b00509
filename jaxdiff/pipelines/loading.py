"""A diffusers Stable Diffusion folder -> `TextToImage` (the parts `generate` runs).

The folder is what `StableDiffusionPipeline.save_pretrained` writes and what downloaded SD 1.x /
2.x folders hold: model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/, weights as
safetensors (read with no torch and no pickle by `jaxdiff.pretrained`). Components jaxdiff does
not use (safety_checker/, feature_extractor/) are ignored.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from jaxdiff.pipelines.scheduler_config import read_scheduler_config, sampler_settings
from jaxdiff.pipelines.text_to_image import TextToImage
from jaxdiff.validation import InputError, InputFileNotFoundError, check_choice

REQUIRED = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
DTYPES = ("float32", "bfloat16")


@dataclasses.dataclass(frozen=True)
class Bound:
    """A hashable pure function of params: `Bound(fn, graphdef)(params, *args)` is
    `fn(graphdef, params, *args)` (equal for equal graphdefs, so jit reuses its compilation)."""

    fn: Callable
    graphdef: object

    def __call__(self, params, *args):
        return self.fn(self.graphdef, params, *args)


@dataclasses.dataclass(frozen=True)
class TokenIds:
    """prompts -> int32 token ids (N, 77), padded and truncated as diffusers' pipelines do."""

    tokenizer: object

    def __call__(self, prompts) -> np.ndarray:
        return self.tokenizer(list(prompts))[0]


def text_states(graphdef, params, ids):
    """The CLIP text encoder's last hidden state (B, L, D): what Stable Diffusion's UNet reads."""
    from jaxdiff.models.clip_text import apply_clip_text

    return apply_clip_text(graphdef, params, ids).last_hidden_state


def check_pipeline_folder(folder) -> dict:
    """Reads model_index.json and checks it describes a Stable Diffusion pipeline (SD 1.x/2.x)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputFileNotFoundError(f"pipeline folder {str(folder)!r} does not exist")
    index_path = folder / "model_index.json"
    what = (f"{str(folder)!r} is not a Stable Diffusion pipeline folder: it needs "
            f"model_index.json naming {', '.join(REQUIRED)}, with those subfolders (the layout "
            f"of StableDiffusionPipeline.save_pretrained and of downloaded SD 1.x/2.x folders)")
    if not index_path.is_file():
        raise InputError(f"{what}; model_index.json is missing")
    try:
        index = json.loads(index_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{what}; model_index.json cannot be read: {e}") from None
    if not isinstance(index, dict):
        raise InputError(f"{what}; model_index.json is not a JSON object")
    cls = index.get("_class_name", "")
    if "XL" in str(cls) or "text_encoder_2" in index:
        raise InputError(f"{str(folder)!r} is a {cls} folder: SDXL pipelines (two text "
                         f"encoders, added conditioning) are not supported; SD 1.x and 2.x are")
    missing = [name for name in REQUIRED
               if name not in index or not (folder / name).is_dir()]
    if missing:
        raise InputError(f"{what}; missing: {', '.join(missing)} (model_index.json "
                         f"_class_name {cls!r})")
    return index


PART_CLASSES = {"text_encoder": "CLIPTextModel", "unet": "UNet2DConditionModel",
                "vae": "AutoencoderKL"}


def _part(folder: Path, name: str, dtype: str):
    """(graphdef, params on the devices, kwargs) of one network, through jaxdiff.pretrained."""
    import jax

    from jaxdiff.pipelines.text_to_image import device_shardings
    from jaxdiff.pretrained import load_component

    loaded = load_component(folder / name, dtype=dtype, kind=PART_CLASSES[name])
    params = jax.device_put(loaded.params, device_shardings()[1])  # once, replicated
    return loaded.graphdef, params, loaded.kwargs


def load_text_to_image(folder, *, dtype: str = "float32", winograd: bool | None = None
                       ) -> TextToImage:
    """Loads a diffusers Stable Diffusion folder for `generate`.

    Args:
      folder: the pipeline folder (model_index.json, unet/, vae/, text_encoder/, tokenizer/,
        scheduler/).
      dtype: "float32" or "bfloat16": the networks' parameter and compute dtype (the latents
        and the sampler stay float32).
      winograd: compute the UNet's and the decoder's 3x3 convolutions of up to
        `jaxdiff.models.winograd.MAX_PIXELS` positions by Winograd's F(2x2, 3x3) (the kernels
        are transformed once, here; 16/9 of their memory). None: on for float32 on the CPU,
        where it makes a 256x256 generation ~15% faster; XLA's GPU and TPU convolutions are
        faster as they are.

    Returns:
      TextToImage with the folder's scheduler settings (`model.sampler`, see
      `scheduler_config.sampler_settings`).

    Raises:
      InputError: a folder that is not an SD pipeline, missing or mis-shaped weights, scheduler
        settings jaxdiff does not implement.
    """
    from jaxdiff.models.autoencoder import decode
    from jaxdiff.models.unet_condition import apply_unet_condition
    from jaxdiff.tokenizer import load_tokenizer

    check_choice("dtype", dtype, DTYPES)
    folder = Path(folder)
    check_pipeline_folder(folder)
    scheduler_config = read_scheduler_config(folder / "scheduler")
    settings = sampler_settings(scheduler_config)  # refuses unsupported settings before loading
    tokenizer = TokenIds(load_tokenizer(folder / "tokenizer"))
    text_graphdef, text_params, _ = _part(folder, "text_encoder", dtype)
    unet_graphdef, unet_params, unet_kwargs = _part(folder, "unet", dtype)
    vae_graphdef, vae_params, vae_kwargs = _part(folder, "vae", dtype)
    if winograd is None:
        import jax

        winograd = dtype == "float32" and jax.default_backend() == "cpu"
    if winograd:
        from jaxdiff.models.winograd import prepare_params

        unet_params = prepare_params(unet_graphdef, unet_params)
        vae_params = prepare_params(vae_graphdef, vae_params)
    vae_factor = 2 ** (len(vae_kwargs["block_out_channels"]) - 1)
    unet_factor = 2 ** (len(unet_kwargs["block_out_channels"]) - 1)
    if unet_kwargs["in_channels"] != vae_kwargs["latent_channels"]:
        raise InputError(f"{str(folder)!r}: the UNet takes {unet_kwargs['in_channels']} "
                         f"channels but the autoencoder makes {vae_kwargs['latent_channels']}")
    sample_size = json.loads((folder / "unet" / "config.json").read_text()).get("sample_size")
    shift = vae_kwargs.get("shift_factor")
    return TextToImage(
        tokenize=tokenizer, encode_text=Bound(text_states, text_graphdef),
        predict=Bound(apply_unet_condition, unet_graphdef), decode=Bound(decode, vae_graphdef),
        params={"text_encoder": text_params, "unet": unet_params, "vae": vae_params},
        sampler=settings, scheduler_config=scheduler_config,
        scaling_factor=float(vae_kwargs.get("scaling_factor", 0.18215)),
        shift_factor=float(shift or 0.0), latent_channels=int(vae_kwargs["latent_channels"]),
        vae_factor=vae_factor, size_multiple=vae_factor * unet_factor,
        default_size=int(sample_size or 64) * vae_factor, name=str(folder))
