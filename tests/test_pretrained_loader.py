"""`jaxdiff.pretrained.load_component`'s registry: transformers' CLIPTextModelWithProjection folders,
and `dtype="bfloat16"` making every network compute in bfloat16 (not only store it)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sd_parity_helpers import perturb_

from jaxdiff.pretrained import load_component

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")

TINY_CLIP = {"vocab_size": 99, "hidden_size": 32, "intermediate_size": 37,
             "num_hidden_layers": 2, "num_attention_heads": 4, "max_position_embeddings": 16,
             "hidden_act": "gelu", "eos_token_id": 2, "bos_token_id": 97, "pad_token_id": 1,
             "projection_dim": 24}
TINY_UNET = {"sample_size": 8, "in_channels": 4, "out_channels": 4, "block_out_channels": (16, 32),
             "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
             "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"), "layers_per_block": 1,
             "attention_head_dim": 2, "cross_attention_dim": 24, "norm_num_groups": 8}
TINY_VAE = {"in_channels": 3, "out_channels": 3, "block_out_channels": (16, 32),
            "down_block_types": ("DownEncoderBlock2D",) * 2,
            "up_block_types": ("UpDecoderBlock2D",) * 2, "layers_per_block": 1,
            "latent_channels": 4, "norm_num_groups": 8, "sample_size": 16}
TINY_PIXEL = {"sample_size": 8, "in_channels": 3, "out_channels": 3, "block_out_channels": (8, 16),
              "layers_per_block": 1, "norm_num_groups": 4, "attention_head_dim": None,
              "down_block_types": ("DownBlock2D", "AttnDownBlock2D"),
              "up_block_types": ("AttnUpBlock2D", "UpBlock2D")}


def _saved(model, folder):
    perturb_(model, seed=3)
    model.save_pretrained(folder, safe_serialization=True)
    return folder


def test_clip_text_with_projection_folder_loads_and_matches_transformers(tmp_path):
    torch.manual_seed(0)
    model = transformers.CLIPTextModelWithProjection(transformers.CLIPTextConfig(**TINY_CLIP))
    folder = _saved(model.eval(), tmp_path / "text_encoder_2")
    loaded = load_component(folder)
    assert loaded.kind == "CLIPTextModelWithProjection" and loaded.kwargs["with_projection"]
    from jaxdiff.models.clip_text import apply_clip_text

    ids = np.array([[97, 5, 17, 40, 2, 1], [97, 60, 2, 1, 1, 1]], np.int64)
    with torch.no_grad():
        ref = model(torch.from_numpy(ids))
    out = apply_clip_text(loaded.graphdef, loaded.params, ids.astype(np.int32))
    np.testing.assert_allclose(out.text_embeds, ref.text_embeds.numpy(), atol=2e-5, rtol=0)
    np.testing.assert_allclose(out.last_hidden_state, ref.last_hidden_state.numpy(), atol=2e-5,
                               rtol=0)


def _matmul_dtypes(jaxpr) -> list[str]:
    """The operand dtypes of every convolution and matrix product in a jaxpr, sub-jaxprs (jit,
    scan, remat, custom rules) included."""
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name in ("conv_general_dilated", "dot_general"):
            found += [str(v.aval.dtype) for v in eqn.invars]
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    found += _matmul_dtypes(inner)
    return found


def _unet_condition_call(loaded):
    from jaxdiff.models.unet_condition import apply_unet_condition

    return lambda p: apply_unet_condition(loaded.graphdef, p, jnp.zeros((1, 8, 8, 4)),
                                          jnp.array([3]), jnp.zeros((1, 5, 24)))


def _vae_call(loaded):
    from jaxdiff.models.autoencoder import decode

    return lambda p: decode(loaded.graphdef, p, jnp.zeros((1, 8, 8, 4)))


def _clip_call(loaded):
    from jaxdiff.models.clip_text import apply_clip_text

    return lambda p: apply_clip_text(loaded.graphdef, p, jnp.array([[97, 5, 2, 1]], jnp.int32))


def _pixel_call(loaded):
    from jaxdiff.models import apply_model

    return lambda p: apply_model(loaded.graphdef, p, jnp.zeros((1, 8, 8, 3)), jnp.array([3]))


BUILDERS = {
    "UNet2DConditionModel": (lambda: diffusers.UNet2DConditionModel(**TINY_UNET),
                             _unet_condition_call),
    "AutoencoderKL": (lambda: diffusers.AutoencoderKL(**TINY_VAE), _vae_call),
    "CLIPTextModel": (lambda: transformers.CLIPTextModel(transformers.CLIPTextConfig(**TINY_CLIP)),
                      _clip_call),
    "UNet2DModel": (lambda: diffusers.UNet2DModel(**TINY_PIXEL), _pixel_call),
}


@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_bfloat16_load_computes_in_bfloat16(tmp_path, kind):
    build, call = BUILDERS[kind]
    torch.manual_seed(0)
    folder = _saved(build().eval(), tmp_path / kind)
    loaded = load_component(folder, dtype="bfloat16")
    assert {str(p.dtype) for p in jax.tree.leaves(loaded.params)} == {"bfloat16"}
    dtypes = _matmul_dtypes(jax.make_jaxpr(call(loaded))(loaded.params).jaxpr)
    # Attention logits may stay float32 by design; the weight products must not.
    assert dtypes and dtypes.count("bfloat16") >= len(dtypes) // 2, dtypes
    full = load_component(folder)
    assert set(_matmul_dtypes(jax.make_jaxpr(call(full))(full.params).jaxpr)) == {"float32"}
