"""jaxdiff.pretrained.convert: torch-named tensors -> jaxdiff params, checked name by name.

The layout changes are checked against numpy's own transposes written out here; the errors must
list every problem at once and return nothing half-loaded.
"""

import jax
import numpy as np
import pytest

from jaxdiff.pretrained.convert import (
    WeightsError,
    convert_tensors,
    export_tensors,
    flatten_params,
    unflatten_params,
)
from jaxdiff.validation import InputError

RNG = np.random.default_rng(0)

TARGET = {
    "conv_in": {"kernel": jax.ShapeDtypeStruct((3, 3, 2, 5), np.float32),
                "bias": jax.ShapeDtypeStruct((5,), np.float32)},
    "blocks": {"0": {"proj": {"kernel": jax.ShapeDtypeStruct((5, 7), np.float32)},
                     "norm": {"scale": jax.ShapeDtypeStruct((5,), np.float32)}}},
}
RULES = {
    "conv_in.weight": ("conv_in/kernel", "conv"),
    "conv_in.bias": ("conv_in/bias", "copy"),
    "blocks.0.proj.weight": ("blocks/0/proj/kernel", "linear"),
    "blocks.0.norm.weight": ("blocks/0/norm/scale", "copy"),
    "position_ids": None,
}


def key_map(name):
    return RULES[name]  # KeyError for an unknown name, as the contract asks


def torch_tensors():
    return {
        "conv_in.weight": RNG.standard_normal((5, 2, 3, 3)).astype(np.float32),  # OIHW
        "conv_in.bias": RNG.standard_normal(5).astype(np.float32),
        "blocks.0.proj.weight": RNG.standard_normal((7, 5)).astype(np.float32),  # (out, in)
        "blocks.0.norm.weight": RNG.standard_normal(5).astype(np.float32),
        "position_ids": np.arange(4)[None],
    }


def test_conv_linear_and_copy_layouts_equal_numpy_transposes():
    tensors = torch_tensors()
    out = convert_tensors(tensors, key_map, TARGET, what="test")
    w = tensors["conv_in.weight"]
    hwio = np.empty((3, 3, 2, 5), np.float32)
    for o in range(5):
        for i in range(2):
            hwio[:, :, i, o] = w[o, i]
    np.testing.assert_array_equal(out["conv_in"]["kernel"], hwio)
    lin = tensors["blocks.0.proj.weight"]
    np.testing.assert_array_equal(out["blocks"]["0"]["proj"]["kernel"],
                                  np.array([[lin[o, i] for o in range(7)] for i in range(5)]))
    np.testing.assert_array_equal(out["conv_in"]["bias"], tensors["conv_in.bias"])
    np.testing.assert_array_equal(out["blocks"]["0"]["norm"]["scale"],
                                  tensors["blocks.0.norm.weight"])
    assert jax.tree.structure(out) == jax.tree.structure(
        jax.tree.map(lambda s: 0, TARGET))


def test_dropped_buffers_are_not_reported():
    out = convert_tensors(torch_tensors(), key_map, TARGET, what="test")
    assert "position_ids" not in flatten_params(out)


def test_bfloat16_on_request():
    out = convert_tensors(torch_tensors(), key_map, TARGET, what="test", dtype="bfloat16")
    assert {str(v.dtype) for v in jax.tree.leaves(out)} == {"bfloat16"}


def test_missing_unexpected_and_misshaped_are_listed_in_one_error():
    tensors = torch_tensors()
    del tensors["conv_in.bias"]                                              # missing
    tensors["blocks.0.extra.weight"] = np.zeros((2, 2), np.float32)          # unknown name
    tensors["blocks.0.proj.weight"] = np.zeros((5, 7), np.float32)           # transposed shape
    with pytest.raises(WeightsError) as info:
        convert_tensors(tensors, key_map, TARGET, what="'demo.safetensors'")
    message = str(info.value)
    assert "1 missing parameters: conv_in/bias" in message
    assert "1 unexpected tensors: blocks.0.extra.weight" in message
    assert "1 mis-shaped tensors: blocks.0.proj.weight (5, 7)" in message
    assert "(5, 7) after the linear layout change" in message
    assert "'demo.safetensors'" in message and "Nothing was loaded" in message
    assert isinstance(info.value, InputError)


def test_a_name_mapped_onto_a_path_the_model_lacks_is_unexpected():
    rules = dict(RULES, **{"conv_in.bias": ("conv_in/offset", "copy")})
    with pytest.raises(WeightsError, match=r"conv_in\.bias \(-> conv_in/offset\)"):
        convert_tensors(torch_tensors(), rules.__getitem__, TARGET, what="test")


def test_two_names_on_one_parameter_are_refused():
    tensors = dict(torch_tensors(), **{"conv_in.bias_copy": np.zeros(5, np.float32)})
    rules = dict(RULES, **{"conv_in.bias_copy": ("conv_in/bias", "copy")})
    with pytest.raises(WeightsError, match="mapped twice"):
        convert_tensors(tensors, rules.__getitem__, TARGET, what="test")


def test_long_listings_are_cut_with_a_count():
    target = {f"p{i}": {"bias": jax.ShapeDtypeStruct((1,), np.float32)} for i in range(30)}
    with pytest.raises(WeightsError, match="30 missing parameters: .* and 10 more"):
        convert_tensors({}, key_map, target, what="test")


def test_flatten_and_unflatten_are_inverse_with_string_list_keys():
    params = {"a": {"0": {"kernel": np.ones(2)}, "1": {"bias": np.zeros(1)}}, "b": np.ones(3)}
    flat = flatten_params(params)
    assert sorted(flat) == ["a/0/kernel", "a/1/bias", "b"]
    back = unflatten_params(flat)
    assert jax.tree.structure(back) == jax.tree.structure(params)


def test_export_inverts_convert():
    tensors = torch_tensors()
    params = convert_tensors(tensors, key_map, TARGET, what="test")
    names = [n for n in tensors if RULES[n] is not None]
    back = export_tensors(params, key_map, names, what="test")
    assert sorted(back) == sorted(names)
    for name in names:
        np.testing.assert_array_equal(back[name], tensors[name])


def test_export_refuses_unmapped_names_and_unused_parameters():
    params = convert_tensors(torch_tensors(), key_map, TARGET, what="test")
    with pytest.raises(WeightsError, match=r"torch names without a parameter: nope.*"
                                           r"parameters not exported: conv_in/bias"):
        export_tensors(params, key_map, ["conv_in.weight", "blocks.0.proj.weight",
                                         "blocks.0.norm.weight", "nope"], what="test")
