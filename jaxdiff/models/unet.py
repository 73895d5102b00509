"""The DDPM UNet (Ho et al. 2020, appendix B) in Flax NNX, with the topology of diffusers' UNet2DModel.

conv_in -> per level: `num_res_blocks` ResBlocks (each followed by self-attention where the level's
feature-map size is in `attention_resolutions`), then a stride-2 3x3 conv (not at the last level)
-> mid block ResBlock-Attention-ResBlock -> per level, deepest first: `num_res_blocks + 1` ResBlocks,
each consuming one skip connection (concatenated on channels), attention as on the way down, then
nearest-neighbour 2x upsampling + 3x3 conv (not at the top level) -> GroupNorm-SiLU-conv_out.
The timestep enters through a sinusoidal embedding of c0 = base_channels * channel_mults[0] dims
and a 2-layer SiLU MLP to 4 * c0 dims; class labels (if `num_classes > 0`) add a learned embedding to it
(one extra "null" row for classifier-free guidance, Ho & Salimans 2022).

Use it functionally through `jaxdiff.models.init_model` / `apply_model`; calling the module
directly works too: `UNet(**config.model, rngs=nnx.Rngs(0))(x, t)`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxdiff.models.layers import (
    DTYPES,
    AttentionBlock,
    Conv,
    Dense,
    GroupNorm,
    ResBlock,
    timestep_embedding,
    upsample_nearest,
)
from jaxdiff.validation import InputError, InputTypeError, check_images, check_int, is_concrete


def _check_dtype(name: str, value) -> str:
    """Accepts a dtype name from DTYPES (or a numpy/jax dtype with such a name)."""
    key = value
    if not isinstance(value, str):
        try:
            key = np.dtype(value).name
        except TypeError:
            key = None
    if key not in DTYPES:
        raise InputError(f"unknown {name} {value!r}; choose one of {sorted(DTYPES)}")
    return key


def check_model_kwargs(*, image_size, in_channels, out_channels, base_channels, channel_mults,
                       num_res_blocks, attention_resolutions, num_heads, dropout, num_groups,
                       num_classes, dtype, param_dtype, remat, flip_sin_to_cos=True,
                       freq_shift=0, norm_eps=1e-5, downsample_padding=1) -> dict:
    """Validates the UNet hyper-parameters; returns them normalised (tuples, dtype names).

    Raises ValueError / TypeError naming the bad value and what is accepted.
    """
    image_size = check_int(image_size, "image_size")
    in_channels = check_int(in_channels, "in_channels")
    out_channels = in_channels if out_channels is None else check_int(
        out_channels, "out_channels")
    base_channels = check_int(base_channels, "base_channels")
    if isinstance(channel_mults, (str, bytes)) or not hasattr(channel_mults, "__iter__"):
        raise InputTypeError(f"channel_mults must be a sequence of positive integers; got "
                             f"{channel_mults!r}")
    channel_mults = tuple(channel_mults)
    if not channel_mults:
        raise InputError("channel_mults must name at least one level, e.g. (1, 2, 2); got ()")
    for m in channel_mults:
        check_int(m, "each channel_mults entry")
    channel_mults = tuple(int(m) for m in channel_mults)
    num_res_blocks = check_int(num_res_blocks, "num_res_blocks")
    num_levels = len(channel_mults)
    factor = 2 ** (num_levels - 1)
    if image_size % factor:
        raise InputError(f"image_size must be divisible by 2**(len(channel_mults) - 1) = {factor} "
                         f"for {num_levels} levels; got image_size={image_size}")
    sizes = [image_size // 2 ** i for i in range(num_levels)]
    if isinstance(attention_resolutions, (int, np.integer)):
        attention_resolutions = (attention_resolutions,)
    attention_resolutions = tuple(attention_resolutions or ())
    for r in attention_resolutions:
        if isinstance(r, bool) or not isinstance(r, (int, np.integer)) or r not in sizes:
            raise InputError(f"attention_resolutions must be feature-map sizes of this UNet "
                             f"{sizes} (image_size={image_size}, {num_levels} levels); got {r!r}")
    attention_resolutions = tuple(sorted({int(r) for r in attention_resolutions}, reverse=True))
    num_heads = check_int(num_heads, "num_heads")
    channels = [base_channels * m for m in channel_mults]
    attn_channels = {channels[-1]} | {c for c, s in zip(channels, sizes)
                                      if s in attention_resolutions}
    for c in sorted(attn_channels):
        if c % num_heads:
            raise InputError(f"num_heads={num_heads} must divide the channels of every attention "
                             f"block (the mid block and attention_resolutions levels): "
                             f"{sorted(attn_channels)}")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise InputError(f"dropout must be a rate in [0, 1); got {dropout!r}")
    num_groups = check_int(num_groups, "num_groups")
    for c in sorted(set(channels)):
        if c % num_groups:
            raise InputError(f"num_groups={num_groups} must divide every level's channels "
                             f"{channels} (base_channels * channel_mults)")
    num_classes = check_int(num_classes, "num_classes", 0)
    if not isinstance(remat, (bool, np.bool_)):
        raise InputTypeError(f"remat must be True or False; got {remat!r}")
    if not isinstance(flip_sin_to_cos, (bool, np.bool_)):
        raise InputTypeError(f"flip_sin_to_cos must be True or False; got {flip_sin_to_cos!r}")
    freq_shift = check_int(freq_shift, "freq_shift", 0, channels[0] // 2 - 1)
    if isinstance(norm_eps, bool) or not isinstance(norm_eps, (int, float)) or not 0 < norm_eps < 1:
        raise InputError(f"norm_eps must be a small positive number (GroupNorm epsilon); "
                         f"got {norm_eps!r}")
    downsample_padding = check_int(downsample_padding, "downsample_padding", 0, 1)
    return dict(image_size=image_size, in_channels=in_channels, out_channels=out_channels,
                base_channels=base_channels, channel_mults=channel_mults,
                num_res_blocks=num_res_blocks, attention_resolutions=attention_resolutions,
                num_heads=num_heads, dropout=float(dropout), num_groups=num_groups,
                num_classes=num_classes, dtype=_check_dtype("dtype", dtype),
                param_dtype=_check_dtype("param_dtype", param_dtype), remat=bool(remat),
                flip_sin_to_cos=bool(flip_sin_to_cos), freq_shift=freq_shift,
                norm_eps=float(norm_eps), downsample_padding=downsample_padding)


def initialise_kernels(model: nnx.Module, key: jax.Array) -> None:
    """Draws every Conv / Dense kernel of `model` as LeCun normal N(0, 1/fan_in) (fan_in =
    prod(shape[:-1])) and a class-embedding table as N(0, 1), from one standard-normal vector.

    Biases stay 0 and GroupNorm scales 1. With a concrete key the vector is sliced in numpy (no
    per-shape compilation); under tracing (jit, eval_shape) the same slices are taken with jnp.
    """
    targets = []
    for _, node in nnx.iter_graph(model):
        if isinstance(node, (Conv, Dense)):
            shape = node.kernel.shape
            targets.append((node.kernel, 1.0 / np.sqrt(np.prod(shape[:-1]))))
        elif isinstance(node, UNet) and node.class_embedding is not None:
            targets.append((node.class_embedding, 1.0))
    total = sum(int(np.prod(v.shape)) for v, _ in targets)
    z = jax.random.normal(key, (total,), jnp.float32)
    xp = np if is_concrete(z) else jnp
    if xp is np:
        z = np.asarray(z)
    offset = 0
    for var, std in targets:
        n = int(np.prod(var.shape))
        value = (z[offset:offset + n].reshape(var.shape) * np.float32(std)).astype(var.dtype)
        var[...] = jnp.asarray(value)
        offset += n


class _Level(nnx.Module):
    """One resolution level: ResBlocks, optional attention after each, optional resampling conv."""

    def __init__(self, res: list, attn: list, resample: Conv | None):
        self.res = nnx.List(res)
        self.attn = nnx.List(attn)
        self.resample = resample


def _call(module, *args):
    return module(*args)


_remat_call = nnx.remat(_call)


class UNet(nnx.Module):
    """DDPM UNet: `model(x, t, labels=None, *, train=False, dropout_key=None) -> (B, H, W, out_ch)`.

    Args (all keyword-only; they are the config's `model` section):
      image_size: training image side in pixels; must be divisible by 2**(len(channel_mults)-1).
      in_channels / out_channels: image channels (out_channels=None means in_channels).
      base_channels: channels of the first level; level i has base_channels * channel_mults[i].
      channel_mults: one multiplier per level (the number of levels is its length).
      num_res_blocks: ResBlocks per level on the way down (one more per level on the way up).
      attention_resolutions: feature-map sizes (pixels, at image_size) whose levels get
        self-attention after each ResBlock. The mid block always has attention.
      num_heads: attention heads (must divide the channels of every attention block).
      dropout: ResBlock dropout rate, active only when called with train=True.
      num_groups: GroupNorm groups (must divide every level's channels).
      num_classes: 0 for an unconditional model; else class labels 0..num_classes-1 plus the
        null label `num_classes` (classifier-free guidance) are embedded.
      dtype: compute dtype name ("float32", "bfloat16", "float16"); the output is float32.
      param_dtype: parameter dtype name.
      remat: recompute each ResBlock / attention block in the backward pass (jax.checkpoint).
      flip_sin_to_cos, freq_shift: the timestep embedding's layout, as diffusers' `Timesteps`
        (the original DDPM checkpoints use False and 1).
      norm_eps: every GroupNorm's epsilon (diffusers' `norm_eps`; 1e-6 in the DDPM checkpoints).
      downsample_padding: 1 pads the stride-2 convolutions by one on every side; 0 pads only
        right and bottom (diffusers' `downsample_padding`, 0 in the DDPM checkpoints).
      rngs: `nnx.Rngs` for initialisation (only the "params" stream is used; none is stored).
    """

    def __init__(self, *, image_size: int = 16, in_channels: int = 1, out_channels: int | None = None,
                 base_channels: int = 16, channel_mults=(1, 2, 4), num_res_blocks: int = 2,
                 attention_resolutions=(4,), num_heads: int = 4, dropout: float = 0.0,
                 num_groups: int = 8, num_classes: int = 0, dtype: str = "float32",
                 param_dtype: str = "float32", remat: bool = False,
                 flip_sin_to_cos: bool = True, freq_shift: int = 0, norm_eps: float = 1e-5,
                 downsample_padding: int = 1, rngs: nnx.Rngs):
        cfg = check_model_kwargs(
            image_size=image_size, in_channels=in_channels, out_channels=out_channels,
            base_channels=base_channels, channel_mults=channel_mults,
            num_res_blocks=num_res_blocks, attention_resolutions=attention_resolutions,
            num_heads=num_heads, dropout=dropout, num_groups=num_groups, num_classes=num_classes,
            dtype=dtype, param_dtype=param_dtype, remat=remat, flip_sin_to_cos=flip_sin_to_cos,
            freq_shift=freq_shift, norm_eps=norm_eps, downsample_padding=downsample_padding)
        for name, value in cfg.items():
            setattr(self, name, value)
        channels = [cfg["base_channels"] * m for m in cfg["channel_mults"]]
        c0 = channels[0]  # conv_in, conv_out and the timestep embedding width (as diffusers)
        temb_dim = 4 * c0
        sizes = [cfg["image_size"] // 2 ** i for i in range(len(channels))]
        # Layers are built with zero kernels; `initialise_kernels` then draws them all at once
        # (one random op instead of one per parameter: fast both eagerly and under jit).
        kw = dict(dtype=cfg["dtype"], param_dtype=cfg["param_dtype"], rngs=None)
        eps = cfg["norm_eps"]
        res_kw = dict(num_groups=cfg["num_groups"], dropout=cfg["dropout"], eps=eps, **kw)
        attn_kw = dict(num_groups=cfg["num_groups"], eps=eps, **kw)
        # diffusers' Downsample2D: padding=1 pads every side; padding=0 pads right and bottom only
        # (the original DDPM checkpoints use it).
        down_pad = None if cfg["downsample_padding"] else ((0, 1), (0, 1))
        heads = cfg["num_heads"]

        self.time_mlp1 = Dense(c0, temb_dim, **kw)
        self.time_mlp2 = Dense(temb_dim, temb_dim, **kw)
        if cfg["num_classes"] > 0:
            self.class_embedding = nnx.Param(jnp.zeros((cfg["num_classes"] + 1, temb_dim),
                                                       DTYPES[cfg["param_dtype"]]))
        else:
            self.class_embedding = None
        self.conv_in = Conv(cfg["in_channels"], c0, 3, **kw)

        down, skip_channels, ch = [], [c0], c0
        for i, (c, s) in enumerate(zip(channels, sizes)):
            res, attn = [], []
            for _ in range(cfg["num_res_blocks"]):
                res.append(ResBlock(ch, c, temb_dim, **res_kw))
                ch = c
                if s in cfg["attention_resolutions"]:
                    attn.append(AttentionBlock(c, heads, **attn_kw))
                skip_channels.append(c)
            last = i == len(channels) - 1
            resample = None if last else Conv(c, c, 3, stride=2, padding=down_pad, **kw)
            if not last:
                skip_channels.append(c)
            down.append(_Level(res, attn, resample))
        self.down = nnx.List(down)

        self.mid_res1 = ResBlock(ch, ch, temb_dim, **res_kw)
        self.mid_attn = AttentionBlock(ch, heads, **attn_kw)
        self.mid_res2 = ResBlock(ch, ch, temb_dim, **res_kw)

        up = []
        for i in reversed(range(len(channels))):
            c, s = channels[i], sizes[i]
            res, attn = [], []
            for _ in range(cfg["num_res_blocks"] + 1):
                res.append(ResBlock(ch + skip_channels.pop(), c, temb_dim, **res_kw))
                ch = c
                if s in cfg["attention_resolutions"]:
                    attn.append(AttentionBlock(c, heads, **attn_kw))
            resample = Conv(c, c, 3, **kw) if i > 0 else None
            up.append(_Level(res, attn, resample))
        self.up = nnx.List(up)
        assert not skip_channels

        self.norm_out = GroupNorm(c0, cfg["num_groups"], eps=eps, **kw)
        self.conv_out = Conv(c0, cfg["out_channels"], 3, **kw)
        initialise_kernels(self, rngs.params())

    @property
    def null_label(self) -> int:
        """The label index meaning "no class" (classifier-free guidance); = num_classes."""
        return self.num_classes

    @property
    def downsampling_factor(self) -> int:
        return 2 ** (len(self.channel_mults) - 1)

    def check_inputs(self, x, t, labels=None, *, train: bool = False, dropout_key=None) -> None:
        """Raises ValueError / TypeError for inputs the model cannot take (shapes and dtypes;
        label values too when they are concrete). Runs on tracers as well (before compiling)."""
        check_images(x, "x")
        b, h, w, c = x.shape
        if c != self.in_channels:
            raise InputError(f"x must have in_channels={self.in_channels} channels (NHWC); "
                             f"got shape {tuple(x.shape)}")
        f = self.downsampling_factor
        if h % f or w % f or h == 0 or w == 0:
            raise InputError(f"x height and width must be positive multiples of the downsampling "
                             f"factor {f} (image_size={self.image_size}); got shape "
                             f"{tuple(x.shape)}")
        t_shape = getattr(t, "shape", None)
        t_dtype = getattr(t, "dtype", None)
        if t_shape is None:
            if isinstance(t, bool) or not isinstance(t, (int, float, np.integer, np.floating)):
                raise InputTypeError(f"t must be an int32 array of shape ({b},) or a scalar; got "
                                     f"{type(t).__name__}")
        else:
            if tuple(t_shape) not in ((), (b,)):
                raise InputError(f"t must have shape (batch,) = ({b},) or be a scalar; got shape "
                                 f"{tuple(t_shape)}")
            if not (jnp.issubdtype(t_dtype, jnp.integer) or jnp.issubdtype(t_dtype, jnp.floating)):
                raise InputTypeError(
                    f"t must be integer (int32) or float timesteps; got dtype {t_dtype}")
        if self.num_classes == 0:
            if labels is not None:
                raise InputError("labels were given but this UNet is unconditional "
                                 "(num_classes=0); build it with num_classes > 0 or pass "
                                 "labels=None")
        elif labels is not None:
            l_shape = getattr(labels, "shape", None)
            l_dtype = getattr(labels, "dtype", None)
            if l_shape is None or tuple(l_shape) != (b,):
                raise InputError(
                    f"labels must be an int32 array of shape (batch,) = ({b},); got "
                    f"{tuple(l_shape) if l_shape is not None else type(labels).__name__}")
            if not jnp.issubdtype(l_dtype, jnp.integer):
                raise InputTypeError(f"labels must be integers in [0, {self.num_classes}] "
                                     f"({self.num_classes} = null label); got dtype {l_dtype}")
            if is_concrete(labels):
                v = np.asarray(labels)
                if v.size and (v.min() < 0 or v.max() > self.num_classes):
                    raise InputError(f"labels must lie in [0, {self.num_classes}] "
                                     f"({self.num_classes} = null label); got values from "
                                     f"{v.min()} to {v.max()}")
        if train and self.dropout > 0 and dropout_key is None:
            raise InputError(f"train=True with dropout={self.dropout} needs a dropout_key "
                             f"(a jax.random.key); got None")

    def __call__(self, x: jax.Array, t, labels: jax.Array | None = None, *, train: bool = False,
                 dropout_key: jax.Array | None = None) -> jax.Array:
        """Predicts the model output (eps, x0 or v) for noisy images.

        Args:
          x: (B, H, W, in_channels) float images; H, W multiples of the downsampling factor.
          t: timesteps, int32 (B,); a scalar is broadcast to the batch; float values are used as
            they are (fractional timesteps).
          labels: int (B,) in [0, num_classes] for a conditional model (num_classes = null label);
            None means the null label for all. Must be None for an unconditional model.
          train: enables dropout (needs `dropout_key` when dropout > 0).
          dropout_key: a jax.random.key; each ResBlock uses fold_in(dropout_key, its index).

        Returns:
          (B, H, W, out_channels) float32.
        """
        self.check_inputs(x, t, labels, train=train, dropout_key=dropout_key)
        b = x.shape[0]
        dt = DTYPES[self.dtype]
        t = jnp.broadcast_to(jnp.asarray(t), (b,))
        emb = timestep_embedding(t, self.base_channels * self.channel_mults[0],
                                 flip_sin_to_cos=self.flip_sin_to_cos, freq_shift=self.freq_shift)
        emb = self.time_mlp2(jax.nn.silu(self.time_mlp1(emb)))
        if self.class_embedding is not None:
            if labels is None:
                labels = jnp.full((b,), self.null_label, jnp.int32)
            emb = emb + self.class_embedding[...][labels].astype(emb.dtype)
        temb_act = jax.nn.silu(emb).astype(dt)

        use_dropout = train and self.dropout > 0
        counter = iter(range(10 ** 6))
        call = _remat_call if self.remat else _call

        def res(block, h):
            key = jax.random.fold_in(dropout_key, next(counter)) if use_dropout else None
            return call(block, h, temb_act, key)

        h = self.conv_in(x)
        skips = [h]
        for level in self.down:
            for j, block in enumerate(level.res):
                h = res(block, h)
                if len(level.attn):
                    h = call(level.attn[j], h)
                skips.append(h)
            if level.resample is not None:
                h = level.resample(h)
                skips.append(h)
        h = res(self.mid_res1, h)
        h = call(self.mid_attn, h)
        h = res(self.mid_res2, h)
        for level in self.up:
            for j, block in enumerate(level.res):
                h = res(block, jnp.concatenate([h, skips.pop().astype(h.dtype)], axis=-1))
                if len(level.attn):
                    h = call(level.attn[j], h)
            if level.resample is not None:
                h = level.resample(upsample_nearest(h))
        h = self.conv_out(self.norm_out(h, silu=True))
        return h.astype(jnp.float32)
