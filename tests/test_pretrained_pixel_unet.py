"""diffusers UNet2DModel folders -> jaxdiff's pixel UNet: the same outputs as diffusers' model.

Tiny random UNet2DModels (weights perturbed so that zero-initialised layers hide nothing) are saved
with `save_pretrained`, loaded by `jaxdiff.pretrained.load_component` and run on the same inputs
as the torch model; whole outputs must agree to 2e-5 in float32.
"""

import json

import numpy as np
import pytest
from sd_parity_helpers import perturb_

from jaxdiff.models import apply_model
from jaxdiff.pretrained import WeightsError, load_component
from jaxdiff.pretrained.pixel_unet import unet_kwargs_from_config
from jaxdiff.validation import InputError

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

# The original DDPM checkpoints' conventions: [sin, cos] with shift 1, right/bottom padding,
# GroupNorm eps 1e-6, one attention head (attention_head_dim null), attention at one level.
DDPM_STYLE = {
    "sample_size": 16, "in_channels": 3, "out_channels": 3, "block_out_channels": (8, 16, 16),
    "layers_per_block": 1, "norm_num_groups": 4, "attention_head_dim": None,
    "down_block_types": ("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    "flip_sin_to_cos": False, "freq_shift": 1, "downsample_padding": 0, "norm_eps": 1e-6}
# Today's defaults, several heads, class labels.
MODERN_STYLE = {
    "sample_size": 8, "in_channels": 1, "out_channels": 2, "block_out_channels": (8, 16),
    "layers_per_block": 2, "norm_num_groups": 4, "attention_head_dim": 4,
    "down_block_types": ("DownBlock2D", "AttnDownBlock2D"),
    "up_block_types": ("AttnUpBlock2D", "UpBlock2D"), "num_class_embeds": 5}


def saved_unet(tmp_path, config, seed=0, name="unet"):
    torch.manual_seed(seed)
    model = diffusers.UNet2DModel(**config).eval()
    perturb_(model, seed + 1, scale=0.1)
    folder = tmp_path / name
    model.save_pretrained(folder, safe_serialization=True)
    return model, folder


def torch_output(model, x_nhwc, t, labels=None):
    with torch.no_grad():
        out = model(torch.from_numpy(x_nhwc.transpose(0, 3, 1, 2)), torch.from_numpy(t),
                    class_labels=None if labels is None else torch.from_numpy(labels)).sample
    return out.numpy().transpose(0, 2, 3, 1)


def inputs(config, batch=2, seed=3):
    rng = np.random.default_rng(seed)
    size = config["sample_size"]
    x = rng.standard_normal((batch, size, size, config["in_channels"])).astype(np.float32)
    return x, np.array([3, 717][:batch], np.int64)


@pytest.mark.parametrize("config", [DDPM_STYLE, MODERN_STYLE], ids=["ddpm_style", "modern"])
def test_loaded_unet2dmodel_equals_diffusers(tmp_path, config):
    model, folder = saved_unet(tmp_path, config)
    loaded = load_component(folder)
    assert loaded.kind == "UNet2DModel"
    x, t = inputs(config)
    labels = np.array([4, 1], np.int64) if config.get("num_class_embeds") else None
    ours = apply_model(loaded.graphdef, loaded.params, x, t.astype(np.int32),
                       None if labels is None else labels.astype(np.int32))
    np.testing.assert_allclose(np.asarray(ours), torch_output(model, x, t, labels), atol=2e-5,
                               rtol=0)


def test_legacy_attention_names_load_to_the_same_model(tmp_path):
    from safetensors.numpy import load_file, save_file

    model, folder = saved_unet(tmp_path, DDPM_STYLE)
    path = folder / "diffusion_pytorch_model.safetensors"
    renames = {".to_q.": ".query.", ".to_k.": ".key.", ".to_v.": ".value.",
               ".to_out.0.": ".proj_attn."}
    legacy = {}
    for name, value in load_file(str(path)).items():
        for new, old in renames.items():
            name = name.replace(new, old)
        legacy[name] = value
    assert any(".proj_attn." in n for n in legacy)
    save_file(legacy, str(path))
    loaded = load_component(folder)
    x, t = inputs(DDPM_STYLE)
    np.testing.assert_allclose(np.asarray(apply_model(loaded.graphdef, loaded.params, x,
                                                      t.astype(np.int32))),
                               torch_output(model, x, t), atol=2e-5, rtol=0)


def test_bfloat16_load_is_close_to_float32(tmp_path):
    model, folder = saved_unet(tmp_path, DDPM_STYLE)
    loaded = load_component(folder, dtype="bfloat16")
    assert {str(v.dtype) for v in __import__("jax").tree.leaves(loaded.params)} == {"bfloat16"}
    x, t = inputs(DDPM_STYLE)
    ours = np.asarray(apply_model(loaded.graphdef, loaded.params, x, t.astype(np.int32)))
    reference = torch_output(model, x, t)
    assert np.abs(ours - reference).max() < 0.05 * np.abs(reference).max()


def test_mis_shaped_weights_name_the_tensor(tmp_path):
    _, folder = saved_unet(tmp_path, DDPM_STYLE)
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text())
    config["block_out_channels"] = [8, 16, 32]  # the weights were saved for [8, 16, 16]
    config_path.write_text(json.dumps(config))
    with pytest.raises(WeightsError, match=r"mis-shaped tensors: .*down_blocks\.2"):
        load_component(folder)


@pytest.mark.parametrize("key,value,fragment", [
    ("resnet_time_scale_shift", "scale_shift", "resnet_time_scale_shift='scale_shift'"),
    ("time_embedding_type", "fourier", "time_embedding_type='fourier'"),
    ("mid_block_scale_factor", 1.414, "mid_block_scale_factor=1.414"),
    ("downsample_type", "resnet", "downsample_type='resnet'"),
    ("block_out_channels", [8, 12, 16], "multiple of the first"),
    ("up_block_types", ["UpBlock2D", "UpBlock2D", "AttnUpBlock2D"], "mirrored"),
    ("attention_head_dim", 8, "one head count"),
    ("add_attention", False, "mid block always has attention"),
    ("layer_per_block", 2, "unknown key(s) ['layer_per_block']"),
])
def test_configs_the_unet_cannot_express_are_refused(key, value, fragment):
    config = dict(DDPM_STYLE, **{key: value}, _class_name="UNet2DModel")
    if key == "attention_head_dim":  # 16-channel blocks and the 8/16 mix
        config["down_block_types"] = ("AttnDownBlock2D", "AttnDownBlock2D", "DownBlock2D")
        config["up_block_types"] = ("UpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D")
    with pytest.raises(InputError) as info:
        unet_kwargs_from_config(config)
    assert fragment in str(info.value)
