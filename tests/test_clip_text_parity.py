"""jaxdiff's CLIPTextModel against transformers' on the same (perturbed, tiny) weights, saved with
save_pretrained and loaded by `jaxdiff.pretrained.load_component`; full SD 1.5 / 2.1 configs
matched key for key."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxdiff.models.clip_text import (
    abstract_clip_text,
    apply_clip_text,
    clip_text_kwargs_from_config,
)
from jaxdiff.pretrained.clip_text_keys import key_map
from jaxdiff.validation import InputError
from tests.sd_parity_helpers import convert, converted_shape, perturb_

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

FIXTURES = Path(__file__).parent / "fixtures"
VOCAB = 99
LENGTH = 12


def _tiny_config(hidden_act: str, eos_token_id: int, with_projection: bool = False):
    return transformers.CLIPTextConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=37, num_hidden_layers=3,
        num_attention_heads=4, max_position_embeddings=16, hidden_act=hidden_act,
        layer_norm_eps=1e-5, eos_token_id=eos_token_id, bos_token_id=VOCAB - 2,
        pad_token_id=1, projection_dim=24)


def _token_batch(eos_id: int, pad_id: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids, mask) of 4 prompts of different lengths: BOS, words, EOS, then padding."""
    rng = np.random.default_rng(seed)
    ids = np.full((4, LENGTH), pad_id, np.int64)
    mask = np.zeros((4, LENGTH), np.int64)
    for row, n_words in enumerate((0, 3, 7, LENGTH - 2)):
        words = rng.integers(3, VOCAB - 3, n_words)
        tokens = [VOCAB - 2, *words, eos_id]
        ids[row, :len(tokens)] = tokens
        mask[row, :len(tokens)] = 1
    return ids, mask


def _save(torch_model, folder: Path, prefix: bool) -> tuple[dict, dict]:
    """Saves with save_pretrained; with `prefix`, rewrites the file in the on-disk checkpoint
    layout (`text_model.` names plus the stored `position_ids` buffer of older checkpoints)."""
    from safetensors.numpy import load_file, save_file

    torch_model.save_pretrained(folder, safe_serialization=True)
    tensors = load_file(str(folder / "model.safetensors"))
    if prefix:
        tensors = {k if k.startswith(("text_model.", "text_projection")) else f"text_model.{k}": v
                   for k, v in tensors.items()}
        max_pos = torch_model.config.max_position_embeddings
        tensors["text_model.embeddings.position_ids"] = np.arange(max_pos)[None].astype(np.int64)
        save_file(tensors, str(folder / "model.safetensors"))
        tensors = load_file(str(folder / "model.safetensors"))
    return json.loads((folder / "config.json").read_text()), tensors


def _load(torch_model, folder: Path, prefix: bool, dtype: str = "float32"):
    """(graphdef, params) of the saved model, read back by jaxdiff's folder loader."""
    from jaxdiff.pretrained import load_component

    _save(torch_model, folder, prefix)
    loaded = load_component(folder, dtype=dtype)
    assert loaded.kind == "CLIPTextModel"
    return loaded.graphdef, loaded.params


@pytest.mark.parametrize("hidden_act,eos_token_id,pad_is_eos,prefix", [
    ("quick_gelu", 2, True, True),         # SD 1.x: legacy eos id, pads with end-of-text
    ("gelu", 2, False, False),             # SD 2.x: legacy eos id, pads with "!"-like id
    ("quick_gelu", VOCAB - 1, False, False),  # new-style eos id, first match picked
    ("gelu_new", VOCAB - 1, True, True),
])
def test_clip_text_matches_transformers(tmp_path, hidden_act, eos_token_id, pad_is_eos, prefix):
    torch.manual_seed(0)
    model = transformers.CLIPTextModel(_tiny_config(hidden_act, eos_token_id)).eval()
    perturb_(model, seed=1)
    graphdef, params = _load(model, tmp_path, prefix)

    # end-of-text is the largest id, as in the real vocabulary (the legacy path takes the argmax)
    ids, mask = _token_batch(VOCAB - 1, VOCAB - 1 if pad_is_eos else 3, seed=2)
    for attention_mask in (None, mask):
        with torch.no_grad():
            ref = model(torch.from_numpy(ids), output_hidden_states=True,
                        attention_mask=None if attention_mask is None
                        else torch.from_numpy(attention_mask))
        out = apply_clip_text(graphdef, params, ids.astype(np.int32), attention_mask,
                              output_hidden_states=True)
        np.testing.assert_allclose(out.last_hidden_state, ref.last_hidden_state.numpy(),
                                   atol=2e-5, rtol=0)
        np.testing.assert_allclose(out.pooled_output, ref.pooler_output.numpy(), atol=2e-5, rtol=0)
        np.testing.assert_allclose(out.penultimate_hidden_state, ref.hidden_states[-2].numpy(),
                                   atol=2e-5, rtol=0)
        assert len(out.hidden_states) == len(ref.hidden_states)
        for ours, theirs in zip(out.hidden_states, ref.hidden_states):
            np.testing.assert_allclose(ours, theirs.numpy(), atol=2e-5, rtol=0)


def test_pooled_output_is_first_eos_not_argmax_for_new_style_eos_id(tmp_path):
    """With a new-style eos id smaller than another id in the prompt, transformers takes the first
    eos position, not the argmax; the two paths differ on this input."""
    eos = 50
    torch.manual_seed(0)
    model = transformers.CLIPTextModel(_tiny_config("quick_gelu", eos)).eval()
    perturb_(model, seed=3)
    graphdef, params = _load(model, tmp_path, prefix=False)
    ids = np.array([[VOCAB - 2, 90, 7, eos, eos, eos, 80, 1]], np.int64)
    with torch.no_grad():
        ref = model(torch.from_numpy(ids)).pooler_output.numpy()
    out = apply_clip_text(graphdef, params, ids.astype(np.int32))
    np.testing.assert_allclose(out.pooled_output, ref, atol=2e-5, rtol=0)
    np.testing.assert_allclose(out.pooled_output, out.last_hidden_state[:, 3], atol=0, rtol=0)


@pytest.mark.parametrize("prefix", [False, True])
def test_clip_text_with_projection_matches_transformers(tmp_path, prefix):
    torch.manual_seed(0)
    config = _tiny_config("gelu", 2)
    model = transformers.CLIPTextModelWithProjection(config).eval()
    perturb_(model, seed=4)
    config_dict, tensors = _save(model, tmp_path, prefix)
    if not prefix:
        tensors = {k.removeprefix("text_model."): v for k, v in tensors.items()}
    kwargs = clip_text_kwargs_from_config(config_dict)
    assert kwargs["with_projection"]
    graphdef, target = abstract_clip_text(kwargs)
    # read through convert_tensors: the folder loader registers CLIPTextModel only
    params = convert(tensors, key_map, target, "CLIPTextModelWithProjection")
    ids, _ = _token_batch(VOCAB - 1, VOCAB - 1, seed=5)
    with torch.no_grad():
        ref = model(torch.from_numpy(ids))
    out = apply_clip_text(graphdef, params, ids.astype(np.int32))
    np.testing.assert_allclose(out.text_embeds, ref.text_embeds.numpy(), atol=2e-5, rtol=0)
    np.testing.assert_allclose(out.last_hidden_state, ref.last_hidden_state.numpy(), atol=2e-5,
                               rtol=0)


def test_bfloat16_compute_stays_close_to_float32(tmp_path):
    torch.manual_seed(0)
    model = transformers.CLIPTextModel(_tiny_config("quick_gelu", 2)).eval()
    perturb_(model, seed=6)
    graphdef_bf16, params = _load(model, tmp_path, prefix=False, dtype="bfloat16")
    assert {np.dtype(p.dtype) for p in jax.tree.leaves(params)} == {np.dtype(jax.numpy.bfloat16)}
    ids, _ = _token_batch(VOCAB - 1, VOCAB - 1, seed=7)
    with torch.no_grad():
        ref = model(torch.from_numpy(ids)).last_hidden_state.numpy()
    out = apply_clip_text(graphdef_bf16, params, ids.astype(np.int32)).last_hidden_state
    assert out.dtype == np.float32
    # bfloat16 keeps 8 bits of mantissa: errors of a few 1e-2 on unit-scale LayerNorm outputs
    np.testing.assert_allclose(out, ref, atol=0.1, rtol=0)
    assert np.abs(np.asarray(out) - ref).mean() < 0.02


@pytest.mark.parametrize("name", ["sd15", "sd21"])
def test_full_size_config_matches_torch_state_dict_one_to_one(name):
    config = json.loads((FIXTURES / name / "text_encoder" / "config.json").read_text())
    _, target = abstract_clip_text(clip_text_kwargs_from_config(config))
    with torch.device("meta"):
        torch_model = transformers.CLIPTextModel(transformers.CLIPTextConfig(**config))
    expected = {}
    for torch_name, tensor in torch_model.state_dict().items():
        rule = key_map("text_model." + torch_name)  # the layout of the checkpoints on disk
        assert key_map(torch_name) == rule
        if rule is not None:
            expected[rule[0]] = converted_shape(tuple(tensor.shape), rule[1])
    ours = {"/".join(str(p.key) for p in path): tuple(leaf.shape)
            for path, leaf in jax.tree_util.tree_flatten_with_path(target)[0]}
    assert ours == expected
    hidden = {"sd15": 768, "sd21": 1024}[name]
    assert ours["final_layer_norm/scale"] == (hidden,)


def test_config_errors_name_the_key():
    base = json.loads((FIXTURES / "sd15" / "text_encoder" / "config.json").read_text())
    with pytest.raises(InputError, match="hidden_act"):
        clip_text_kwargs_from_config({**base, "hidden_act": "relu"})
    with pytest.raises(InputError, match="rope_theta"):
        clip_text_kwargs_from_config({**base, "rope_theta": 10000})
    with pytest.raises(InputError, match="num_attention_heads"):
        clip_text_kwargs_from_config({**base, "num_attention_heads": 7})
    with pytest.raises(InputError, match="eos_token_id"):
        clip_text_kwargs_from_config({**base, "eos_token_id": [2, 3]})


def test_unknown_torch_name_is_refused():
    with pytest.raises(KeyError, match="text_model.encoder.layers.0.self_attn.qkv.weight"):
        key_map("text_model.encoder.layers.0.self_attn.qkv.weight")


def test_left_padding_matches_transformers_eager_attention(tmp_path):
    """Padding before the prompt leaves the padding queries nothing to see; like transformers'
    eager attention (the additive minimum mask) they then attend uniformly, and every position,
    pooled output included, agrees. (torch's SDPA path differs from eager on those rows only.)"""
    torch.manual_seed(0)
    model = transformers.CLIPTextModel(_tiny_config("gelu", VOCAB - 1)).eval()
    model.config._attn_implementation = "eager"
    perturb_(model, seed=8)
    graphdef, params = _load(model, tmp_path, prefix=False)
    ids = np.array([[1, 1, VOCAB - 2, 5, 6, VOCAB - 1], [VOCAB - 2, 5, VOCAB - 1, 1, 1, 1]])
    mask = np.array([[0, 0, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]])
    with torch.no_grad():
        ref = model(torch.from_numpy(ids), attention_mask=torch.from_numpy(mask))
    out = apply_clip_text(graphdef, params, ids.astype(np.int32), mask)
    np.testing.assert_allclose(out.last_hidden_state, ref.last_hidden_state.numpy(), atol=2e-5,
                               rtol=0)
    np.testing.assert_allclose(out.pooled_output, ref.pooler_output.numpy(), atol=2e-5, rtol=0)


def test_bad_inputs_are_refused_before_running():
    from jaxdiff.models.clip_text import init_clip_text

    kwargs = dict(vocab_size=VOCAB, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                  num_attention_heads=2, max_position_embeddings=16)
    graphdef, params = init_clip_text(kwargs, jax.random.key(0))
    with pytest.raises(InputError, match="vocab|input_ids must lie"):
        apply_clip_text(graphdef, params, np.array([[0, VOCAB]], np.int32))
    with pytest.raises(InputError, match="max_position_embeddings=16"):
        apply_clip_text(graphdef, params, np.zeros((1, 17), np.int32))
    with pytest.raises(InputError, match="integer array"):
        apply_clip_text(graphdef, params, np.zeros((1, 4), np.float32))
    with pytest.raises(InputError, match="attention_mask"):
        apply_clip_text(graphdef, params, np.zeros((2, 4), np.int32), np.ones((2, 5)))
    with pytest.raises(InputError, match="hidden_act"):
        init_clip_text({**kwargs, "hidden_act": "relu"}, jax.random.key(0))
