"""The UNet and the pure functions the training and sampling code use to build and call it.

The model is a Flax NNX module used functionally: `init_model` splits it into a static, hashable
`graphdef` and a `params` pytree (a plain nested dict of arrays with string keys, so optax,
`jax.tree.map` and orbax take it as it is); `apply_model` merges them back inside whatever
transformation calls it (jit, grad, scan).

Example:
  >>> import jax, jax.numpy as jnp
  >>> graphdef, params = init_model({"base_channels": 16, "channel_mults": (1, 2),
  ...                                "attention_resolutions": ()}, jax.random.key(0))
  >>> out = apply_model(graphdef, params, jnp.zeros((2, 16, 16, 1)), jnp.array([0, 999]))
  >>> out.shape
  (2, 16, 16, 1)
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxdiff.models.autoencoder import AutoencoderKL
from jaxdiff.models.clip_text import CLIPTextModel, clip_text_kwargs_from_config
from jaxdiff.models.diffusers_config import (
    autoencoder_kwargs_from_config,
    unet_condition_kwargs_from_config,
)
from jaxdiff.models.layers import GROUP_NORM_EPS
from jaxdiff.models.unet import UNet, check_model_kwargs
from jaxdiff.models.unet_condition import UNet2DCondition
from jaxdiff.validation import InputError

__all__ = [
    "AutoencoderKL",
    "CLIPTextModel",
    "UNet",
    "UNet2DCondition",
    "apply_model",
    "autoencoder_kwargs_from_config",
    "check_model_kwargs",
    "clip_text_kwargs_from_config",
    "count_params",
    "diffusers_equivalent_kwargs",
    "init_model",
    "make_model_fn",
    "unet_condition_kwargs_from_config",
]

Params = dict[str, Any]


def _stringify_keys(tree):
    if isinstance(tree, dict):
        return {str(k): _stringify_keys(v) for k, v in tree.items()}
    return tree


def _full_kwargs(model_kwargs: dict) -> dict:
    """Fills the UNet defaults in and validates; raises for unknown or bad keys."""
    if not isinstance(model_kwargs, dict):
        model_kwargs = dict(model_kwargs)  # e.g. an ml_collections ConfigDict
    params = inspect.signature(UNet.__init__).parameters
    allowed = sorted(n for n in params if n not in ("self", "rngs"))
    unknown = sorted(set(model_kwargs) - set(allowed))
    if unknown:
        raise InputError(f"unknown model option(s) {unknown}; choose from {allowed}")
    full = {n: params[n].default for n in allowed}
    full.update(model_kwargs)
    return check_model_kwargs(**full)


def init_model(model_kwargs: dict, key: jax.Array) -> tuple[nnx.GraphDef, Params]:
    """Builds `UNet(**model_kwargs)` and splits it into (graphdef, params).

    Args:
      model_kwargs: the UNet keyword arguments (the config's `model` section); missing ones take
        the UNet defaults.
      key: a jax.random.key for the parameter initialisation.

    Returns:
      graphdef: static, hashable structure of the model (pass it as a static argument / close
        over it; equal configs give equal graphdefs).
      params: nested dict of arrays (string keys); restorable into the module by `apply_model`.
    """
    kwargs = _full_kwargs(model_kwargs)

    model = UNet(**kwargs, rngs=nnx.Rngs(params=key))
    graphdef, state, rest = nnx.split(model, nnx.Param, ...)
    if jax.tree.leaves(rest):
        raise AssertionError("the UNet holds non-parameter state; functional use would drop it")
    params = _stringify_keys(nnx.to_pure_dict(state))
    return graphdef, params


def _merge(graphdef: nnx.GraphDef, params: Params) -> UNet:
    return nnx.merge(graphdef, nnx.State(nnx.restore_int_paths(params)))


def apply_model(graphdef: nnx.GraphDef, params: Params, x: jax.Array, t, labels=None, *,
                train: bool = False, dropout_key: jax.Array | None = None) -> jax.Array:
    """Runs the UNet with the given parameters; pure, usable inside jit / grad / lax.scan.

    Args:
      graphdef, params: as returned by `init_model` (params may be restored from a checkpoint,
        where list indices come back as strings: both are accepted).
      x: (B, H, W, in_channels) float images (H, W multiples of 2**(levels-1)).
      t: int32 timesteps (B,) (a scalar is broadcast; floats are used as they are).
      labels: int (B,) in [0, num_classes] for a conditional model (num_classes is the null
        label; None means null for all); must be None for an unconditional model.
      train: enables dropout; then `dropout_key` (a jax.random.key, e.g. folded in from the step)
        is required when the model's dropout > 0.

    Returns:
      (B, H, W, out_channels) float32.

    Raises:
      ValueError / TypeError on bad input, while tracing (before anything is compiled).
    """
    model = _merge(graphdef, params)
    model.check_inputs(x, t, labels, train=train, dropout_key=dropout_key)
    # Normalise what does not change the result, so that one compiled version serves them all.
    train = bool(train) and model.dropout > 0
    if not train:
        dropout_key = None
    if model.num_classes > 0 and labels is None:
        labels = jnp.full((x.shape[0],), model.null_label, jnp.int32)
    t = jnp.broadcast_to(jnp.asarray(t), x.shape[:1])
    return _apply_jit(graphdef, params, x, t, labels, train, dropout_key)


@functools.partial(jax.jit, static_argnames=("graphdef", "train"))
def _apply_jit(graphdef, params, x, t, labels, train, dropout_key):
    # Called eagerly this compiles once per graphdef and shapes (op-by-op execution of a UNet is
    # slow); inside an outer jit / grad / scan it is inlined.
    return _merge(graphdef, params)(x, t, labels, train=train, dropout_key=dropout_key)


@dataclasses.dataclass(frozen=True)
class _BoundApply:
    """Hashable callable: the static part of a `make_model_fn` Partial (equal for equal graphdefs,
    so a jitted sampler taking the Partial as an argument reuses its compilation)."""

    graphdef: nnx.GraphDef
    labels_enabled: bool

    def __call__(self, params, x_t, t, labels=None):
        if self.labels_enabled:
            return apply_model(self.graphdef, params, x_t, t, labels)
        if labels is not None:
            raise InputError("this model_fn was made with labels_enabled=False; call fn(x_t, t)")
        return apply_model(self.graphdef, params, x_t, t)


def make_model_fn(graphdef: nnx.GraphDef, params: Params,
                  labels_enabled: bool = False) -> jax.tree_util.Partial:
    """A pytree callable `fn(x_t, t)` (or `fn(x_t, t, labels)`) evaluating the model in eval mode.

    The params are the Partial's leaves and the graphdef is in its static structure, so passing
    the Partial to a jitted function recompiles only when the model structure changes.
    """
    return jax.tree_util.Partial(_BoundApply(graphdef, bool(labels_enabled)), params)


def count_params(params: Params) -> int:
    """Total number of scalar parameters."""
    return int(sum(np.size(p) for p in jax.tree.leaves(params)))


def _attention_head_dim(cfg: dict) -> int:
    channels = [cfg["base_channels"] * m for m in cfg["channel_mults"]]
    sizes = [cfg["image_size"] // 2 ** i for i in range(len(channels))]
    attn = [channels[-1]] + [c for c, s in zip(channels, sizes) if s in cfg["attention_resolutions"]]
    return math.gcd(*[c // cfg["num_heads"] for c in attn])


def diffusers_equivalent_kwargs(**model_kwargs) -> dict:
    """Constructor kwargs of a diffusers `UNet2DModel` with the same architecture and parameter count.

    Every block matches: ResnetBlock2D <-> ResBlock, Attention <-> AttentionBlock (diffusers keeps
    q, k, v as three Linear layers where we fuse them: same count), the same time-embedding MLP and
    class embedding table (num_classes + 1 rows). Diffusers uses one attention_head_dim for all
    levels; it is chosen so that every attention block has heads * head_dim = channels (the head
    count can then differ per level from `num_heads`, which changes no parameter).
    """
    cfg = _full_kwargs(model_kwargs)
    channels = tuple(cfg["base_channels"] * m for m in cfg["channel_mults"])
    sizes = [cfg["image_size"] // 2 ** i for i in range(len(channels))]
    has_attn = [s in cfg["attention_resolutions"] for s in sizes]
    return dict(
        sample_size=cfg["image_size"],
        in_channels=cfg["in_channels"],
        out_channels=cfg["out_channels"],
        block_out_channels=channels,
        layers_per_block=cfg["num_res_blocks"],
        down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in has_attn),
        up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(has_attn)),
        mid_block_type="UNetMidBlock2D",
        norm_num_groups=cfg["num_groups"],
        norm_eps=cfg["norm_eps"],
        attention_head_dim=_attention_head_dim(cfg),
        dropout=cfg["dropout"],
        num_class_embeds=cfg["num_classes"] + 1 if cfg["num_classes"] else None,
        time_embedding_type="positional",
        flip_sin_to_cos=cfg["flip_sin_to_cos"],
        freq_shift=cfg["freq_shift"],
        act_fn="silu",
        downsample_padding=cfg["downsample_padding"],
        resnet_time_scale_shift="default",
        add_attention=True,
    )
