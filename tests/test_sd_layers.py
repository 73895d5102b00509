"""The shared layers' options that the Stable Diffusion parts use, against float64 numpy formulas:
the timestep embedding's order and frequency shift, LayerNorm, multi-head (causal) attention,
asymmetric convolution padding and the epsilon of GroupNorm."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxdiff.models.layers import (
    Conv,
    GroupNorm,
    LayerNorm,
    multi_head_attention,
    timestep_embedding,
)


@pytest.mark.parametrize("flip,shift", [(True, 0), (False, 1), (True, 1), (False, 0)])
def test_timestep_embedding_order_and_shift_match_float64_formula(flip, shift):
    t = np.array([0.0, 1.0, 17.5, 999.0])
    dim = 12
    half = dim // 2
    freqs = np.exp(-np.log(10000.0) * np.arange(half) / (half - shift))
    args = t[:, None] * freqs[None]
    parts = [np.cos(args), np.sin(args)] if flip else [np.sin(args), np.cos(args)]
    got = timestep_embedding(jnp.asarray(t, jnp.float32), dim, flip_sin_to_cos=flip,
                             freq_shift=shift)
    np.testing.assert_allclose(got, np.concatenate(parts, axis=1), atol=2e-4)


def test_layer_norm_matches_float64_reference():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 3, 6)) * 4 + 2
    ln = LayerNorm(6, eps=1e-5, rngs=None)
    ln.scale[...] = jnp.asarray(rng.normal(size=6), jnp.float32)
    ln.bias[...] = jnp.asarray(rng.normal(size=6), jnp.float32)
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    ref = (x - mean) / np.sqrt(var + 1e-5) * np.asarray(ln.scale[...]) + np.asarray(ln.bias[...])
    np.testing.assert_allclose(ln(jnp.asarray(x, jnp.float32)), ref, rtol=1e-5, atol=1e-5)


def _attention_reference(q, k, v, heads, causal):
    b, lq, c = q.shape
    d = c // heads

    def split(a):
        return a.reshape(b, -1, heads, d).transpose(0, 2, 1, 3)

    logits = split(q) @ split(k).transpose(0, 1, 3, 2) / np.sqrt(d)
    if causal:
        logits = np.where(np.tril(np.ones((lq, k.shape[1]), bool)), logits, -np.inf)
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    return (weights @ split(v)).transpose(0, 2, 1, 3).reshape(b, lq, c)


@pytest.mark.parametrize("lk,causal", [(7, False), (5, True)])
def test_multi_head_attention_matches_float64_reference(lk, causal):
    rng = np.random.default_rng(1)
    lq = lk if causal else 5
    q, k, v = (rng.normal(size=(2, n, 8)) for n in (lq, lk, lk))
    got = multi_head_attention(*(jnp.asarray(a, jnp.float32) for a in (q, k, v)), 2,
                               causal=causal)
    np.testing.assert_allclose(got, _attention_reference(q, k, v, 2, causal), atol=1e-5)


def test_conv_with_right_bottom_padding_matches_explicit_padding():
    rng = np.random.default_rng(2)
    conv = Conv(2, 3, 3, stride=2, padding=((0, 1), (0, 1)), rngs=nnx.Rngs(0))
    x = rng.normal(size=(1, 6, 6, 2))
    kernel = np.asarray(conv.kernel[...], np.float64)
    padded = np.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))
    ref = np.zeros((1, 3, 3, 3))
    for i in range(3):
        for j in range(3):
            patch = padded[0, 2 * i:2 * i + 3, 2 * j:2 * j + 3, :]
            ref[0, i, j] = np.einsum("hwc,hwco->o", patch, kernel)
    np.testing.assert_allclose(conv(jnp.asarray(x, jnp.float32)), ref, atol=1e-5)


def test_group_norm_uses_its_epsilon():
    x = np.random.default_rng(3).normal(size=(1, 2, 2, 4)) * 1e-3  # variance near epsilon
    g = x.reshape(1, 4, 2, 2)
    mean, var = g.mean(axis=(1, 3), keepdims=True), g.var(axis=(1, 3), keepdims=True)
    for eps in (1e-6, 1e-5):
        ref = ((g - mean) / np.sqrt(var + eps)).reshape(x.shape)
        gn = GroupNorm(4, 2, eps=eps, rngs=None)
        np.testing.assert_allclose(gn(jnp.asarray(x, jnp.float32)), ref, rtol=1e-3, atol=1e-4)


def test_long_attention_tiled_on_cpu_matches_float64_reference():
    # 1024 positions: long enough that the CPU path runs (head, query block) tiles
    from jaxdiff.models.layers import _query_chunk

    assert _query_chunk(1024, 1024) == 256
    rng = np.random.default_rng(4)
    q, k, v = (rng.normal(size=(1, 1024, 16)) for _ in range(3))
    got = multi_head_attention(*(jnp.asarray(a, jnp.float32) for a in (q, k, v)), 2)
    np.testing.assert_allclose(got, _attention_reference(q, k, v, 2, False), atol=1e-5)
