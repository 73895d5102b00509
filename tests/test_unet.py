"""The UNet: shapes, exact parameter counts, conditioning, dropout, jit/grad, dtypes, remat, errors.

References are independent of the code: parameter counts from the architecture's formula and the
counts diffusers' UNet2DModel reports for the equivalent configuration, float64 numpy versions of
the timestep embedding, group norm and attention.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxdiff.models import (
    UNet,
    apply_model,
    count_params,
    diffusers_equivalent_kwargs,
    init_model,
    make_model_fn,
)
from jaxdiff.models.layers import AttentionBlock, GroupNorm, timestep_embedding

TINY = dict(image_size=8, in_channels=1, base_channels=8, channel_mults=(1, 2),
            num_res_blocks=1, attention_resolutions=(4,), num_heads=2, num_groups=4)
# one level: the cheapest model to compile, for behaviours that do not depend on the depth
FLAT = dict(TINY, channel_mults=(1,), attention_resolutions=())


def _inputs(batch=2, size=8, channels=1, seed=0):
    kx, kt = jax.random.split(jax.random.key(seed))
    x = jax.random.normal(kx, (batch, size, size, channels))
    t = jax.random.randint(kt, (batch,), 0, 1000).astype(jnp.int32)
    return x, t


@pytest.fixture(scope="module")
def tiny():
    return init_model(TINY, jax.random.key(0))


@pytest.fixture(scope="module")
def flat():
    return init_model(FLAT, jax.random.key(0))


# ----------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("kwargs,size", [
    (dict(TINY), 8),
    (dict(TINY, in_channels=3, out_channels=2, channel_mults=(1, 1, 2),
          attention_resolutions=(8, 2)), 8),
    (dict(TINY), 12),  # any size divisible by the downsampling factor
])
def test_output_shape_equals_input_shape_with_out_channels(kwargs, size):
    graphdef, params = init_model(kwargs, jax.random.key(0))
    x, t = _inputs(size=size, channels=kwargs["in_channels"])
    out = apply_model(graphdef, params, x, t)
    assert out.shape == x.shape[:3] + (kwargs.get("out_channels") or kwargs["in_channels"],)
    assert out.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(out)))


# ----------------------------------------------------------------------------- parameter count
def _conv(k, cin, cout):
    return k * k * cin * cout + cout


def _dense(i, o):
    return i * o + o


def _res(cin, cout, temb):
    shortcut = _conv(1, cin, cout) if cin != cout else 0
    return 2 * cin + _conv(3, cin, cout) + _dense(temb, cout) + 2 * cout + _conv(3, cout, cout) + shortcut


def _attn(c):
    return 2 * c + 3 * _dense(c, c) + _dense(c, c)


def _formula(image_size, in_channels, base_channels, channel_mults, num_res_blocks,
             attention_resolutions, num_classes=0, out_channels=None, **_):
    """The DDPM UNet's parameter count, block by block (Ho et al. 2020 appendix B topology)."""
    out_channels = out_channels or in_channels
    chans = [base_channels * m for m in channel_mults]
    c0, temb = chans[0], 4 * chans[0]
    sizes = [image_size // 2 ** i for i in range(len(chans))]
    total = _dense(c0, temb) + _dense(temb, temb) + _conv(3, in_channels, c0)
    total += (num_classes + 1) * temb if num_classes else 0
    skips, ch = [c0], c0
    for i, (c, s) in enumerate(zip(chans, sizes)):
        for _ in range(num_res_blocks):
            total += _res(ch, c, temb) + (_attn(c) if s in attention_resolutions else 0)
            ch = c
            skips.append(c)
        if i < len(chans) - 1:
            total += _conv(3, c, c)
            skips.append(c)
    total += 2 * _res(ch, ch, temb) + _attn(ch)
    for i in reversed(range(len(chans))):
        c, s = chans[i], sizes[i]
        for _ in range(num_res_blocks + 1):
            total += _res(ch + skips.pop(), c, temb) + (_attn(c) if s in attention_resolutions else 0)
            ch = c
        total += _conv(3, c, c) if i > 0 else 0
    return total + 2 * c0 + _conv(3, c0, out_channels)


@pytest.mark.parametrize("kwargs", [
    TINY,
    dict(TINY, in_channels=3, out_channels=2, num_res_blocks=2, num_classes=10),
    dict(image_size=16, in_channels=1, base_channels=16, channel_mults=(1, 2, 4),
         num_res_blocks=2, attention_resolutions=(16, 4), num_heads=2, num_groups=4),
    dict(TINY, channel_mults=(2, 3)),
])
def test_parameter_count_equals_architecture_formula(kwargs):
    model = nnx.eval_shape(lambda: UNet(**kwargs, rngs=nnx.Rngs(0)))
    n = sum(math.prod(v.shape) for v in jax.tree.leaves(nnx.state(model, nnx.Param)))
    assert n == _formula(**kwargs)


def test_count_params_counts_every_scalar(flat):
    _, params = flat
    assert count_params(params) == _formula(**FLAT)


# Counts printed by sum(p.numel() for p in diffusers.UNet2DModel(**diffusers_equivalent_kwargs(
# **kwargs)).parameters()) with diffusers 0.42.1 / torch 2.13.
DIFFUSERS_COUNTS = [
    ({}, 989217),
    ({"num_classes": 10, "dropout": 0.1}, 989921),
    ({"attention_resolutions": (8, 4)}, 1010657),
    ({"base_channels": 32, "channel_mults": (1, 2, 2), "num_res_blocks": 2,
      "attention_resolutions": (8,)}, 1623169),
    (dict(TINY, channel_mults=(2, 3)), 117065),
    ({"base_channels": 16, "channel_mults": (1, 2, 4), "attention_resolutions": (16, 4),
      "num_heads": 2, "num_groups": 4, "out_channels": 2, "in_channels": 3,
      "num_res_blocks": 1}, 690562),
]


@pytest.mark.parametrize("kwargs,expected", DIFFUSERS_COUNTS)
def test_parameter_count_equals_diffusers_unet2dmodel(kwargs, expected):
    model = nnx.eval_shape(lambda: UNet(**kwargs, rngs=nnx.Rngs(0)))
    n = sum(math.prod(v.shape) for v in jax.tree.leaves(nnx.state(model, nnx.Param)))
    assert n == expected


def test_diffusers_kwargs_place_attention_where_the_unet_has_it():
    kw = diffusers_equivalent_kwargs(**dict(TINY, channel_mults=(1, 2, 2),
                                            attention_resolutions=(8, 2)))
    assert kw["down_block_types"] == ("AttnDownBlock2D", "DownBlock2D", "AttnDownBlock2D")
    assert kw["up_block_types"] == ("AttnUpBlock2D", "UpBlock2D", "AttnUpBlock2D")
    assert kw["block_out_channels"] == (8, 16, 16)
    assert kw["layers_per_block"] == 1 and kw["norm_num_groups"] == 4
    assert kw["num_class_embeds"] is None
    assert diffusers_equivalent_kwargs(num_classes=10)["num_class_embeds"] == 11


# ----------------------------------------------------------------------------- layer references
def test_timestep_embedding_matches_float64_formula():
    t = np.array([0, 1, 17, 999])
    dim = 10
    half = dim // 2
    freqs = np.exp(-np.log(10000.0) * np.arange(half) / half)
    args = t[:, None].astype(np.float64) * freqs[None]
    expected = np.concatenate([np.cos(args), np.sin(args)], axis=1)  # flip_sin_to_cos=True
    np.testing.assert_allclose(timestep_embedding(jnp.asarray(t), dim), expected, atol=2e-4)


def test_group_norm_matches_float64_reference():
    x = np.random.default_rng(0).normal(size=(2, 3, 3, 8)) * 3 + 1
    gn = GroupNorm(8, 4, rngs=nnx.Rngs(0))
    gn.scale[...] = jnp.arange(1, 9, dtype=jnp.float32) / 4
    gn.bias[...] = jnp.arange(8, dtype=jnp.float32) / 8
    g = x.reshape(2, 9, 4, 2)
    mean = g.mean(axis=(1, 3), keepdims=True)
    var = g.var(axis=(1, 3), keepdims=True)
    ref = ((g - mean) / np.sqrt(var + 1e-5)).reshape(x.shape) * (np.arange(1, 9) / 4) + np.arange(8) / 8
    np.testing.assert_allclose(gn(jnp.asarray(x, jnp.float32)), ref, rtol=1e-4, atol=1e-4)
    silu = ref / (1 + np.exp(-ref))
    np.testing.assert_allclose(gn(jnp.asarray(x, jnp.float32), silu=True), silu, rtol=1e-4, atol=1e-4)


def test_attention_block_matches_float64_multihead_reference():
    rng = np.random.default_rng(1)
    c, heads = 8, 2
    blk = AttentionBlock(c, heads, num_groups=1, dtype="float32", param_dtype="float32",
                         rngs=nnx.Rngs(0))
    blk.qkv.bias[...] = jnp.asarray(rng.normal(size=3 * c) * 0.1, jnp.float32)
    blk.out.bias[...] = jnp.asarray(rng.normal(size=c) * 0.1, jnp.float32)
    x = rng.normal(size=(2, 2, 3, c))
    h = x.reshape(2, 6, c)
    h = (h - h.mean(axis=(1, 2), keepdims=True)) / np.sqrt(h.var(axis=(1, 2), keepdims=True) + 1e-5)
    wqkv, bqkv = np.asarray(blk.qkv.kernel[...], np.float64), np.asarray(blk.qkv.bias[...])
    qkv = h @ wqkv + bqkv
    d = c // heads
    out = np.zeros_like(h)
    for n in range(heads):  # heads are contiguous channel slices of q, k and v
        q, k, v = (qkv[..., j * c + n * d: j * c + (n + 1) * d] for j in range(3))
        logits = np.einsum("bqd,bkd->bqk", q, k) / np.sqrt(d)
        w = np.exp(logits - logits.max(-1, keepdims=True))
        out[..., n * d:(n + 1) * d] = np.einsum("bqk,bkd->bqd", w / w.sum(-1, keepdims=True), v)
    ref = x + (out @ np.asarray(blk.out.kernel[...], np.float64)
               + np.asarray(blk.out.bias[...])).reshape(x.shape)
    np.testing.assert_allclose(blk(jnp.asarray(x, jnp.float32)), ref, rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------- conditioning, t
@pytest.fixture(scope="module")
def conditional():
    return init_model(dict(FLAT, num_classes=3), jax.random.key(0))


def test_labels_change_the_output_of_a_conditional_model(conditional):
    graphdef, params = conditional
    x, t = _inputs()
    a = apply_model(graphdef, params, x, t, jnp.array([0, 0]))
    b = apply_model(graphdef, params, x, t, jnp.array([1, 2]))
    assert float(jnp.max(jnp.abs(a - b))) > 1e-4


def test_missing_labels_mean_the_null_label(conditional):
    graphdef, params = conditional
    assert UNet(**dict(FLAT, num_classes=3), rngs=nnx.Rngs(0)).null_label == 3
    x, t = _inputs()
    np.testing.assert_array_equal(apply_model(graphdef, params, x, t),
                                  apply_model(graphdef, params, x, t, jnp.array([3, 3])))


def test_scalar_timestep_is_broadcast_over_the_batch(tiny):
    x, _ = _inputs()
    np.testing.assert_allclose(apply_model(*tiny, x, 7),
                               apply_model(*tiny, x, jnp.array([7, 7], jnp.int32)), atol=1e-6)


def test_timestep_changes_the_output(tiny):
    x, _ = _inputs()
    a = apply_model(*tiny, x, jnp.array([1, 1]))
    b = apply_model(*tiny, x, jnp.array([900, 900]))
    assert float(jnp.max(jnp.abs(a - b))) > 1e-4


# ----------------------------------------------------------------------------- dropout
@pytest.fixture(scope="module")
def with_dropout():
    return init_model(dict(FLAT, dropout=0.5), jax.random.key(0))


def test_eval_mode_is_deterministic_and_ignores_dropout(with_dropout):
    graphdef, params = with_dropout
    x, t = _inputs()
    a = apply_model(graphdef, params, x, t)
    b = apply_model(graphdef, params, x, t, dropout_key=jax.random.key(5))
    np.testing.assert_array_equal(a, b)


def test_train_mode_dropout_depends_on_the_key_only(with_dropout):
    graphdef, params = with_dropout
    x, t = _inputs()
    run = lambda k: apply_model(graphdef, params, x, t, train=True, dropout_key=jax.random.key(k))
    np.testing.assert_array_equal(run(1), run(1))
    assert float(jnp.max(jnp.abs(run(1) - run(2)))) > 1e-4
    assert float(jnp.max(jnp.abs(run(1) - apply_model(graphdef, params, x, t)))) > 1e-4


def test_train_mode_without_dropout_needs_no_key(tiny):
    x, t = _inputs()
    np.testing.assert_array_equal(apply_model(*tiny, x, t, train=True), apply_model(*tiny, x, t))


# ----------------------------------------------------------------------------- transformations
def _loss(graphdef, params, x, t, **kw):
    return jnp.mean(jnp.square(apply_model(graphdef, params, x, t, **kw)))


_jit_grad = jax.jit(jax.grad(_loss, argnums=1), static_argnums=0)


def test_apply_model_under_jit_matches_eager_and_grad_covers_every_parameter(flat):
    graphdef, params = flat
    x, t = _inputs()
    jitted = jax.jit(apply_model, static_argnums=0)
    np.testing.assert_allclose(jitted(graphdef, params, x, t), apply_model(graphdef, params, x, t),
                               rtol=1e-5, atol=1e-5)
    grads = _jit_grad(graphdef, params, x, t)
    assert jax.tree.structure(grads) == jax.tree.structure(params)
    assert all(bool(jnp.all(jnp.isfinite(g))) and float(jnp.max(jnp.abs(g))) > 0
               for g in jax.tree.leaves(grads))


def test_params_are_a_string_keyed_dict_that_optax_updates(flat):
    graphdef, params = flat
    keys = []
    jax.tree_util.tree_map_with_path(lambda p, _: keys.extend(k.key for k in p), params)
    assert all(isinstance(k, str) for k in keys)
    opt = optax.adamw(1e-3)
    x, t = _inputs()
    grads = _jit_grad(graphdef, params, x, t)
    updates, _ = jax.jit(opt.update)(grads, opt.init(params), params)
    new = jax.jit(optax.apply_updates)(params, updates)
    assert float(_loss(graphdef, new, x, t)) < float(_loss(graphdef, params, x, t))


def test_bfloat16_compute_returns_float32_close_to_float32(tiny):
    graphdef, params = tiny
    graphdef16, params16 = init_model(dict(TINY, dtype="bfloat16"), jax.random.key(0))
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params16))
    x, t = _inputs()
    out16 = apply_model(graphdef16, params16, x, t)
    out32 = apply_model(graphdef, params, x, t)
    assert out16.dtype == jnp.float32
    assert float(jnp.max(jnp.abs(out16 - out32))) < 0.1 * float(jnp.max(jnp.abs(out32)))


def test_remat_gives_the_same_output_and_gradient():
    kw = dict(FLAT, dropout=0.3)
    graphdef, params = init_model(kw, jax.random.key(0))
    graphdef_r, params_r = init_model(dict(kw, remat=True), jax.random.key(0))
    x, t = _inputs()
    key = jax.random.key(3)

    def loss_and_grad(g, p):
        return jax.jit(jax.value_and_grad(
            lambda p: _loss(g, p, x, t, train=True, dropout_key=key)))(p)

    (la, ga), (lb, gb) = loss_and_grad(graphdef, params), loss_and_grad(graphdef_r, params_r)
    np.testing.assert_allclose(la, lb, rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), ga, gb)


def test_model_fn_is_a_pytree_that_does_not_retrace_for_new_params(tiny):
    graphdef, params = tiny
    traces = []

    @jax.jit
    def run(fn, x, t):
        traces.append(1)
        return fn(x, t)

    x, t = _inputs()
    a = run(make_model_fn(graphdef, params), x, t)
    params2 = jax.tree.map(lambda p: p * 1.01, params)
    b = run(make_model_fn(graphdef, params2), x, t)
    assert len(traces) == 1
    np.testing.assert_allclose(b, apply_model(graphdef, params2, x, t), rtol=1e-5, atol=1e-5)
    assert float(jnp.max(jnp.abs(a - b))) > 0


def test_model_fn_with_labels_passes_them_through(conditional):
    graphdef, params = conditional
    x, t = _inputs()
    fn = make_model_fn(graphdef, params, labels_enabled=True)
    labels = jnp.array([2, 0])
    np.testing.assert_array_equal(fn(x, t, labels), apply_model(graphdef, params, x, t, labels))


def test_params_with_checkpoint_style_string_indices_restore(tiny):
    graphdef, params = tiny
    x, t = _inputs()
    # orbax restores every key as a string: list indices "0", "1" must still be accepted
    np.testing.assert_array_equal(apply_model(graphdef, jax.tree.map(np.asarray, params), x, t),
                                  apply_model(graphdef, params, x, t))


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("change,message", [
    (dict(channel_mults=()), "at least one level"),
    (dict(image_size=10, channel_mults=(1, 2, 2)), "divisible by 2"),
    (dict(attention_resolutions=(3,)), "feature-map sizes"),
    (dict(num_groups=3), "num_groups=3 must divide"),
    (dict(num_heads=3), "num_heads=3 must divide"),
    (dict(dtype="float8"), "unknown dtype 'float8'"),
    (dict(param_dtype="int8"), "unknown param_dtype"),
    (dict(dropout=1.0), "dropout must be a rate"),
    (dict(num_res_blocks=0), "num_res_blocks must be an integer >= 1"),
    (dict(num_classes=-1), "num_classes must be an integer >= 0"),
    (dict(base_channel=8), "unknown model option"),
])
def test_bad_model_options_raise_naming_the_value(change, message):
    with pytest.raises(ValueError, match=message):
        init_model(dict(TINY, **change), jax.random.key(0))


def test_bad_constructor_argument_raises_in_the_module_too():
    with pytest.raises(ValueError, match="divisible"):
        UNet(**dict(TINY, image_size=9), rngs=nnx.Rngs(0))


@pytest.mark.parametrize("x_shape,x_dtype,t,exc,message", [
    ((2, 8, 8), jnp.float32, None, ValueError, "NHWC"),
    ((2, 8, 8, 1), jnp.int32, None, TypeError, "floating point"),
    ((2, 8, 8, 3), jnp.float32, None, ValueError, "in_channels=1"),
    ((2, 7, 7, 1), jnp.float32, None, ValueError, "multiples of the downsampling factor 2"),
    ((2, 8, 8, 1), jnp.float32, jnp.zeros((3,), jnp.int32), ValueError, r"\(batch,\) = \(2,\)"),
    ((2, 8, 8, 1), jnp.float32, jnp.zeros((2,), bool), TypeError, "integer .* or float"),
    ((2, 8, 8, 1), jnp.float32, "5", TypeError, "t must be"),
])
def test_bad_images_or_timesteps_raise(tiny, x_shape, x_dtype, t, exc, message):
    x = jnp.zeros(x_shape, x_dtype)
    t = jnp.zeros((2,), jnp.int32) if t is None else t
    with pytest.raises(exc, match=message):
        apply_model(*tiny, x, t)


def test_labels_for_an_unconditional_model_raise(tiny):
    x, t = _inputs()
    with pytest.raises(ValueError, match="unconditional"):
        apply_model(*tiny, x, t, jnp.array([0, 1]))


@pytest.mark.parametrize("labels,exc,message", [
    (jnp.array([0, 4]), ValueError, r"\[0, 3\]"),
    (jnp.array([-1, 0]), ValueError, r"\[0, 3\]"),
    (jnp.array([0.0, 1.0]), TypeError, "integers"),
    (jnp.array([0, 1, 2]), ValueError, r"\(batch,\) = \(2,\)"),
])
def test_bad_labels_raise(conditional, labels, exc, message):
    graphdef, params = conditional
    x, t = _inputs()
    with pytest.raises(exc, match=message):
        apply_model(graphdef, params, x, t, labels)


def test_train_with_dropout_and_no_key_raises(with_dropout):
    graphdef, params = with_dropout
    x, t = _inputs()
    with pytest.raises(ValueError, match="needs a dropout_key"):
        apply_model(graphdef, params, x, t, train=True)


def test_bad_input_raises_while_tracing_before_compiling(tiny):
    x = jnp.zeros((2, 8, 8, 3))
    with pytest.raises(ValueError, match="in_channels=1"):
        jax.jit(apply_model, static_argnums=0)(*tiny, x, jnp.zeros((2,), jnp.int32))
