"""Winograd F(2x2, 3x3) convolutions against a float64 direct convolution written here."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import nnx

from jaxdiff.models import winograd
from jaxdiff.models.layers import Conv

# Lavin & Gray (2016), F(2x2, 3x3): the kernel transform G.
G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], np.float64)


def direct_conv_same(x, kernel):
    """float64 'SAME' stride-1 3x3 convolution (cross-correlation, as XLA and torch), NHWC."""
    x, kernel = np.asarray(x, np.float64), np.asarray(kernel, np.float64)
    b, h, w, _ = x.shape
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    out = np.zeros((b, h, w, kernel.shape[-1]))
    for i in range(3):
        for j in range(3):
            out += np.einsum("bhwc,co->bhwo", xp[:, i:i + h, j:j + w], kernel[i, j])
    return out


def _random(shape, seed, scale=1.0):
    return (scale * np.random.default_rng(seed).standard_normal(shape)).astype(np.float32)


def test_kernel_transform_is_g_kernel_gt_and_recovers_the_kernel():
    kernel = _random((3, 3, 5, 7), 0)
    want = np.einsum("ak,klio,bl->abio", G, kernel.astype(np.float64), G).reshape(16, 5, 7)
    u = np.asarray(winograd.transform_kernel(kernel))
    np.testing.assert_allclose(u, want, rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.asarray(winograd.recover_kernel(u)), kernel, rtol=0,
                               atol=1e-6)


@pytest.mark.parametrize("shape,out", [((2, 8, 8, 16), 24), ((1, 5, 7, 3), 4),
                                       ((3, 1, 2, 8), 8), ((1, 6, 9, 64), 32)])
def test_winograd_convolution_equals_direct_convolution(shape, out):
    x = _random(shape, 1)
    kernel = _random((3, 3, shape[-1], out), 2, scale=1 / np.sqrt(9 * shape[-1]))
    got = np.asarray(winograd.conv3x3(x, winograd.transform_kernel(kernel)))
    want = direct_conv_same(x, kernel)
    assert got.shape == want.shape and got.dtype == np.float32
    # a few float32 roundings of unit-scale outputs (the direct XLA convolution: ~1e-6)
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-5 * np.abs(want).max())


def _conv_module(cin, cout, **kw):
    return Conv(cin, cout, 3, rngs=nnx.Rngs(0), **kw)


def test_prepared_conv_module_takes_both_paths(monkeypatch):
    conv = _conv_module(8, 16)
    x = _random((2, 6, 6, 8), 3)
    bias = _random((16,), 4)
    conv.bias[...] = bias
    want = direct_conv_same(x, np.asarray(conv.kernel[...])) + bias
    graphdef, state = nnx.split(conv)
    params = nnx.to_pure_dict(state)
    prepared = winograd.prepare_params(graphdef, params, min_channels=1)
    assert prepared["kernel"].shape == (16, 8, 16)
    assert params["kernel"].shape == (3, 3, 8, 16)  # the caller's params are left as they were
    module = nnx.merge(graphdef, nnx.State(prepared))
    for max_pixels in (72, 71):  # 2 x 6 x 6 = 72 positions: Winograd, then the direct path
        monkeypatch.setattr(winograd, "MAX_PIXELS", max_pixels)
        got = np.asarray(jax.jit(lambda m, x: m(x))(module, x))
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-5 * np.abs(want).max())


def test_prepare_replaces_only_eligible_convolutions():
    from fixtures.tiny_sd_pipeline import SD1_UNET

    from jaxdiff.models.diffusers_config import unet_condition_kwargs_from_config
    from jaxdiff.models.unet_condition import init_unet_condition

    config = dict(SD1_UNET, block_out_channels=(64, 64))
    graphdef, params = init_unet_condition(unet_condition_kwargs_from_config(config),
                                           jax.random.key(0))
    prepared = winograd.prepare_params(graphdef, params)
    leaves = {jax.tree_util.keystr(p): v.shape for p, v in
              jax.tree_util.tree_flatten_with_path(prepared)[0]}
    changed = sorted(k for k, s in leaves.items() if len(s) == 3 and s[0] == 16)
    assert leaves["['conv_in']['kernel']"] == (3, 3, 4, 64)     # 4 input channels
    assert leaves["['conv_out']['kernel']"] == (3, 3, 64, 4)    # 4 output channels
    assert leaves["['down_blocks']['0']['resample']['kernel']"] == (3, 3, 64, 64)  # stride 2
    assert "['down_blocks']['0']['resnets']['0']['conv1']['kernel']" in changed
    assert "['up_blocks']['0']['resample']['kernel']" in changed  # upsampler: stride 1
    # every 3x3 stride-1 convolution of the resnets (2 per resnet: 2 down + 1 mid x2 + 4 up)
    assert sum("resnets" in k for k in changed) == 2 * (2 + 2 + 4)


def test_unprepared_params_are_returned_as_they_are():
    conv = _conv_module(4, 4)
    graphdef, state = nnx.split(conv)
    params = nnx.to_pure_dict(state)
    assert winograd.prepare_params(graphdef, params) is params  # 4 channels: none eligible
