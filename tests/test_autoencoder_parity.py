"""The KL autoencoder against diffusers' AutoencoderKL on the same weights.

Tiny random torch models (weights perturbed away from their init) are saved with
`save_pretrained` as safetensors and read back through the config parser and the key map; the
posterior mean and log-variance and the decoded images must agree to 2e-5 in float32. The full
SD 1.5 and SD 2.1 VAE configs are checked without weights against the torch meta-device model.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sd_parity_helpers as H

from jaxdiff.models.autoencoder import abstract_autoencoder, decode, encode
from jaxdiff.models.diffusers_config import autoencoder_kwargs_from_config
from jaxdiff.pretrained import load_component
from jaxdiff.pretrained.autoencoder_keys import key_map
from jaxdiff.validation import InputError

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

FIXTURES = Path(__file__).parent / "fixtures"
VAE = dict(in_channels=3, out_channels=3, block_out_channels=(16, 32, 32),
           down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
           layers_per_block=1, latent_channels=4, norm_num_groups=8, sample_size=16)
# without the 1x1 convs around the latent and without mid-block attention
BARE = dict(VAE, use_quant_conv=False, use_post_quant_conv=False, mid_block_add_attention=False,
            block_out_channels=(16, 32), down_block_types=("DownEncoderBlock2D",) * 2,
            up_block_types=("UpDecoderBlock2D",) * 2)
STYLES = {"vae": VAE, "bare": BARE}


def _build(style):
    torch.manual_seed(0)
    model = diffusers.AutoencoderKL(**STYLES[style]).eval()
    H.perturb_(model, seed=2)
    return model


def _load(model, folder, rename=None):
    """(graphdef, params) read by `jaxdiff.pretrained.load_component` from the folder that
    `save_pretrained` wrote (with the tensors renamed by `rename` first, when given)."""
    H.save_folder(model, folder)
    if rename:
        from safetensors.numpy import save_file

        _, tensors = H.read_folder(folder)
        save_file({rename(k): v for k, v in tensors.items()},
                  str(folder / "diffusion_pytorch_model.safetensors"))
    loaded = load_component(folder)
    assert loaded.kind == "AutoencoderKL"
    return loaded.graphdef, loaded.params


def _nchw(x):
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def _nhwc(t):
    return t.numpy().transpose(0, 2, 3, 1)


def _images(seed, size):
    return np.random.default_rng(seed).uniform(-1, 1, size=(2, size, size, 3)).astype(np.float32)


@pytest.mark.parametrize("style", sorted(STYLES))
def test_encode_and_decode_match_diffusers(style, tmp_path):
    model = _build(style)
    graphdef, params = _load(model, tmp_path)
    x = _images(0, 16)
    f = 2 ** (len(STYLES[style]["block_out_channels"]) - 1)
    z = np.random.default_rng(1).normal(size=(2, 16 // f, 16 // f, 4)).astype(np.float32)
    with torch.no_grad():
        posterior = model.encode(_nchw(x)).latent_dist
        decoded = model.decode(_nchw(z)).sample
    mean, logvar = encode(graphdef, params, jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(mean), _nhwc(posterior.mean), atol=2e-5)
    np.testing.assert_allclose(np.asarray(logvar), _nhwc(posterior.logvar), atol=2e-5)
    np.testing.assert_allclose(np.asarray(decode(graphdef, params, jnp.asarray(z))),
                               _nhwc(decoded), atol=2e-5)


def test_logvar_is_clipped_as_diffusers_clips_it(tmp_path):
    model = _build("vae")
    with torch.no_grad():  # push half the log-variances above 20 and half below -30
        model.quant_conv.bias[4:6] += 200.0
        model.quant_conv.bias[6:] -= 200.0
    graphdef, params = _load(model, tmp_path)
    x = _images(3, 16)
    with torch.no_grad():
        reference = _nhwc(model.encode(_nchw(x)).latent_dist.logvar)
    _, logvar = encode(graphdef, params, jnp.asarray(x))
    assert reference[..., :2].max() == 20.0 and reference[..., 2:].min() == -30.0
    np.testing.assert_allclose(np.asarray(logvar), reference, atol=2e-5)


def test_legacy_attention_names_load_to_the_same_parameters(tmp_path):
    model = _build("vae")
    legacy = {".to_q.": ".query.", ".to_k.": ".key.", ".to_v.": ".value.",
              ".to_out.0.": ".proj_attn."}

    def rename(name):
        for new, old in legacy.items():
            name = name.replace(new, old)
        return name

    _, params = _load(model, tmp_path / "new")
    _, legacy_params = _load(model, tmp_path / "old", rename=rename)
    assert any(rename(k) != k for k in model.state_dict())
    jax.tree.map(np.testing.assert_array_equal, params, legacy_params)


def test_scaling_and_shift_factor_come_from_the_config():
    assert autoencoder_kwargs_from_config(VAE)["scaling_factor"] == 0.18215
    assert autoencoder_kwargs_from_config(VAE)["shift_factor"] is None
    kwargs = autoencoder_kwargs_from_config(dict(VAE, scaling_factor=0.3611, shift_factor=0.1159))
    assert (kwargs["scaling_factor"], kwargs["shift_factor"]) == (0.3611, 0.1159)


@pytest.mark.parametrize("name", ["sd15", "sd21"])
def test_full_size_config_matches_torch_state_dict_one_to_one(name):
    config = json.loads((FIXTURES / name / "vae" / "config.json").read_text())
    _, target = abstract_autoencoder(autoencoder_kwargs_from_config(config))
    expected = {"/".join(k.key for k in path): tuple(leaf.shape)
                for path, leaf in jax.tree_util.tree_flatten_with_path(target)[0]}
    with torch.device("meta"):
        model = diffusers.AutoencoderKL.from_config(config)
    mapped = {}
    for torch_name, shape in H.torch_meta_shapes(model).items():
        path, kind = key_map(torch_name)
        assert path not in mapped, f"{torch_name} and another tensor both map to {path}"
        mapped[path] = H.converted_shape(shape, kind)
    assert mapped == expected


def test_unknown_config_key_is_refused_by_name():
    with pytest.raises(InputError, match="unknown key.*'latent_dim'"):
        autoencoder_kwargs_from_config(dict(VAE, latent_dim=4))


def test_unsupported_block_type_is_refused_by_name():
    with pytest.raises(InputError, match="down_block_types"):
        autoencoder_kwargs_from_config(dict(VAE, down_block_types=["AttnDownEncoderBlock2D"] * 3))


def test_unknown_torch_name_raises_key_error():
    with pytest.raises(KeyError, match="encoder.mid_block.attentions.0.to_x.weight"):
        key_map("encoder.mid_block.attentions.0.to_x.weight")


def test_image_size_not_divisible_by_the_downsampling_factor_is_refused(tmp_path):
    graphdef, params = _load(_build("vae"), tmp_path)
    with pytest.raises(InputError, match="multiples of 4"):
        encode(graphdef, params, jnp.zeros((1, 10, 16, 3)))


def test_bfloat16_decode_stays_close_to_float32_reference(tmp_path):
    model = _build("vae")
    _, params = _load(model, tmp_path)
    kwargs = autoencoder_kwargs_from_config(json.loads((tmp_path / "config.json").read_text()))
    bf16_graphdef, _ = abstract_autoencoder(dict(kwargs, dtype="bfloat16"))
    z = np.random.default_rng(4).normal(size=(1, 4, 4, 4)).astype(np.float32)
    with torch.no_grad():
        reference = _nhwc(model.decode(_nchw(z)).sample)
    out = decode(bf16_graphdef, params, jnp.asarray(z))
    assert out.dtype == jnp.float32
    assert np.abs(np.asarray(out) - reference).max() < 0.05 * np.abs(reference).max()
