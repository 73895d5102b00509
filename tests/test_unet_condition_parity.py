"""The text-conditioned UNet against diffusers' UNet2DConditionModel on the same weights.

Tiny random torch models (weights perturbed so that no layer is left at its zero / unit init) are
saved with `save_pretrained` as safetensors and read back through the config parser and the key
map; outputs must agree to 2e-5 in float32. The full-size SD 1.5 and SD 2.1 configs are checked
without weights: jax.eval_shape against the torch model on the meta device, name by name.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sd_parity_helpers as H

from jaxdiff.models.diffusers_config import unet_condition_kwargs_from_config
from jaxdiff.models.unet_condition import abstract_unet_condition, apply_unet_condition
from jaxdiff.pretrained import load_component
from jaxdiff.pretrained.unet_condition_keys import make_key_map
from jaxdiff.validation import InputError

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

FIXTURES = Path(__file__).parent / "fixtures"
# Every block type, two ResBlocks per level (so the up path's skip channels vary), one head count
# and 1x1-conv projections: the SD 1.x layout in miniature.
SD1 = dict(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(16, 32),
           down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
           up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
           layers_per_block=2, attention_head_dim=2, cross_attention_dim=24, norm_num_groups=8)
# SD 2.x: linear projections and a head count per level (the mid block uses the last).
SD2 = dict(SD1, use_linear_projection=True, layers_per_block=1,
           down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
           up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"), attention_head_dim=[2, 4])
# The remaining options: sin-first embedding with a frequency shift, right/bottom-padded
# downsampling, centred input, cross-only first attention, two transformer blocks per level.
OPTIONS = dict(SD1, flip_sin_to_cos=False, freq_shift=1, downsample_padding=0,
               center_input_sample=True, layers_per_block=1, only_cross_attention=True,
               transformer_layers_per_block=2)
STYLES = {"sd1": SD1, "sd2": SD2, "options": OPTIONS}


def _inputs(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(2, 8, 8, 4)).astype(np.float32)
    t = np.array([3, 817], np.int64)
    context = rng.normal(size=(2, 5, 24)).astype(np.float32)
    return x, t, context


def _torch_output(model, x, t, context):
    with torch.no_grad():
        out = model(torch.from_numpy(x.transpose(0, 3, 1, 2)), torch.from_numpy(t),
                    torch.from_numpy(context)).sample
    return out.numpy().transpose(0, 2, 3, 1)


@pytest.fixture(scope="module")
def load(tmp_path_factory):
    """load(style) -> (torch model, jaxdiff kwargs, graphdef, params), read by
    `jaxdiff.pretrained.load_component` from the folder that `save_pretrained` wrote; each style
    is built once per module."""
    cache = {}

    def _load(style):
        if style not in cache:
            torch.manual_seed(0)
            model = diffusers.UNet2DConditionModel(**STYLES[style]).eval()
            H.perturb_(model, seed=1)
            folder = H.save_folder(model, tmp_path_factory.mktemp(style))
            loaded = load_component(folder)
            assert loaded.kind == "UNet2DConditionModel"
            cache[style] = model, loaded.kwargs, loaded.graphdef, loaded.params
        return cache[style]

    return _load


@pytest.mark.parametrize("style", sorted(STYLES))
def test_unet_output_matches_diffusers(load, style):
    model, _, graphdef, params = load(style)
    x, t, context = _inputs()
    out = apply_unet_condition(graphdef, params, jnp.asarray(x), jnp.asarray(t, jnp.int32),
                               jnp.asarray(context))
    assert out.shape == x.shape and out.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(out), _torch_output(model, x, t, context), atol=2e-5)


def test_fractional_timesteps_match_diffusers(load):
    model, _, graphdef, params = load("sd1")
    x, _, context = _inputs(1)
    t = np.array([0.5, 433.25], np.float32)
    out = apply_unet_condition(graphdef, params, jnp.asarray(x), jnp.asarray(t),
                               jnp.asarray(context))
    np.testing.assert_allclose(np.asarray(out), _torch_output(model, x, t, context), atol=2e-5)


def test_bfloat16_compute_stays_close_to_float32_reference(load):
    model, kwargs, _, params = load("sd1")
    graphdef, _ = abstract_unet_condition(dict(kwargs, dtype="bfloat16"))
    x, t, context = _inputs()
    out = apply_unet_condition(graphdef, params, jnp.asarray(x), jnp.asarray(t, jnp.int32),
                               jnp.asarray(context))
    ref = _torch_output(model, x, t, context)
    assert out.dtype == jnp.float32
    assert np.abs(np.asarray(out) - ref).max() < 0.05 * np.abs(ref).max()


@pytest.mark.parametrize("name", ["sd15", "sd21"])
def test_full_size_config_matches_torch_state_dict_one_to_one(name):
    config = json.loads((FIXTURES / name / "unet" / "config.json").read_text())
    kwargs = unet_condition_kwargs_from_config(config)
    _, target = abstract_unet_condition(kwargs)
    expected = {"/".join(k.key for k in path): tuple(leaf.shape)
                for path, leaf in jax.tree_util.tree_flatten_with_path(target)[0]}
    with torch.device("meta"):
        model = diffusers.UNet2DConditionModel.from_config(config)
    key_map = make_key_map(kwargs)
    mapped = {}
    for torch_name, shape in H.torch_meta_shapes(model).items():
        path, kind = key_map(torch_name)
        assert path not in mapped, f"{torch_name} and another tensor both map to {path}"
        mapped[path] = H.converted_shape(shape, kind)
    assert mapped == expected
    assert sum(np.prod(s) for s in expected.values()) == sum(
        p.numel() for p in model.parameters())


def test_unknown_config_key_is_refused_by_name():
    with pytest.raises(InputError, match="unknown key.*'attention_heads'"):
        unet_condition_kwargs_from_config(dict(SD1, attention_heads=4))


@pytest.mark.parametrize("key,value", [("addition_embed_type", "text_time"),
                                       ("class_embed_type", "timestep"),
                                       ("encoder_hid_dim_type", "text_proj")])
def test_sdxl_style_conditioning_is_refused_with_reason(key, value):
    with pytest.raises(InputError, match=f"{key}=.*SD 1.x and 2.x"):
        unet_condition_kwargs_from_config(dict(SD1, **{key: value}))


@pytest.mark.parametrize("key,value", [("dual_cross_attention", True),
                                       ("down_block_types", ["SimpleCrossAttnDownBlock2D"] * 3),
                                       ("time_embedding_type", "fourier"),
                                       ("resnet_time_scale_shift", "scale_shift")])
def test_unsupported_architecture_value_is_refused_by_name(key, value):
    with pytest.raises(InputError, match=key):
        unet_condition_kwargs_from_config(dict(SD1, **{key: value}))


def test_heads_that_do_not_divide_channels_are_refused():
    with pytest.raises(InputError, match="attention_head_dim"):
        unet_condition_kwargs_from_config(dict(SD1, attention_head_dim=3))


def test_num_attention_heads_takes_precedence_over_attention_head_dim():
    kwargs = unet_condition_kwargs_from_config(dict(SD1, num_attention_heads=[4, 8]))
    assert kwargs["heads"] == (4, 8)


def test_wrong_context_width_is_refused_before_compiling(load):
    _, _, graphdef, params = load("sd1")
    x, t, _ = _inputs()
    with pytest.raises(InputError, match="cross_attention_dim"):
        apply_unet_condition(graphdef, params, jnp.asarray(x), jnp.asarray(t),
                             jnp.zeros((2, 5, 7)))
