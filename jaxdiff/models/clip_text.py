"""The CLIP text encoder (Radford et al. 2021, section 2.4) as transformers' `CLIPTextModel` builds it.

Token + learned position embeddings -> pre-LayerNorm transformer layers with causal
self-attention (LayerNorm -> attention -> residual, LayerNorm -> MLP -> residual) -> final
LayerNorm. The pooled output is the final state at the end-of-text token, picked as transformers
picks it: with the legacy `eos_token_id == 2` of older configs (Stable Diffusion 1.x and 2.x) the
position of the largest input id, otherwise the first position equal to `eos_token_id`. An optional
bias-free `text_projection` maps the pooled output to `projection_dim`
(`CLIPTextModelWithProjection`).

Attribute names follow transformers' module names, so `jaxdiff.pretrained.clip_text_keys` maps
weights with a few rules. Used functionally like the other models: `init_clip_text` /
`abstract_clip_text` give (graphdef, params), `apply_clip_text` runs it.

Example:
  >>> import jax, jax.numpy as jnp
  >>> kwargs = dict(vocab_size=99, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
  ...               num_attention_heads=4, max_position_embeddings=16, eos_token_id=98)
  >>> graphdef, params = init_clip_text(kwargs, jax.random.key(0))
  >>> out = apply_clip_text(graphdef, params, jnp.array([[97, 5, 98, 98]]))
  >>> out.last_hidden_state.shape, out.pooled_output.shape
  ((1, 4, 32), (1, 32))
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxdiff.models.functional import merge_params, split_params
from jaxdiff.models.layers import DTYPES, Dense, LayerNorm, _const, check_dtypes
from jaxdiff.validation import InputError, is_concrete

Params = dict[str, Any]


def quick_gelu(x: jax.Array) -> jax.Array:
    """x * sigmoid(1.702 x): OpenAI CLIP's approximation of GELU (transformers' "quick_gelu")."""
    return x * jax.nn.sigmoid(1.702 * x)


ACTIVATIONS = {
    "quick_gelu": quick_gelu,
    "gelu": functools.partial(jax.nn.gelu, approximate=False),
    "gelu_new": functools.partial(jax.nn.gelu, approximate=True),
    "gelu_pytorch_tanh": functools.partial(jax.nn.gelu, approximate=True),
}


class Embedding(nnx.Module):
    """A (num, features) lookup table, torch's `nn.Embedding` (parameter `embedding`)."""

    def __init__(self, num: int, features: int, *, param_dtype: str):
        self.embedding = nnx.Param(_const(0.0, (num, features), param_dtype))

    def __call__(self, ids: jax.Array) -> jax.Array:
        return jnp.take(self.embedding[...], ids, axis=0)


class CLIPTextEmbeddings(nnx.Module):
    def __init__(self, vocab_size: int, max_positions: int, hidden: int, *, param_dtype: str):
        self.token_embedding = Embedding(vocab_size, hidden, param_dtype=param_dtype)
        self.position_embedding = Embedding(max_positions, hidden, param_dtype=param_dtype)

    def __call__(self, input_ids: jax.Array) -> jax.Array:
        positions = jnp.arange(input_ids.shape[1])
        return self.token_embedding(input_ids) + self.position_embedding(positions)[None]


class CLIPAttention(nnx.Module):
    """Multi-head self-attention with biased q/k/v/out projections (`q_proj` ... `out_proj`)."""

    def __init__(self, hidden: int, heads: int, *, dtype: str, param_dtype: str):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=None)
        self.q_proj = Dense(hidden, hidden, **kw)
        self.k_proj = Dense(hidden, hidden, **kw)
        self.v_proj = Dense(hidden, hidden, **kw)
        self.out_proj = Dense(hidden, hidden, **kw)
        self.heads = heads

    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        """x: (B, L, hidden); mask: bool (B, 1, L, L), True where a query may see a key."""
        b, length, hidden = x.shape
        split = lambda y: y.reshape(b, length, self.heads, hidden // self.heads)
        # XLA implementation: float32 logits and softmax whatever the compute dtype.
        o = jax.nn.dot_product_attention(split(self.q_proj(x)), split(self.k_proj(x)),
                                         split(self.v_proj(x)), mask=mask,
                                         implementation="xla")
        return self.out_proj(o.reshape(b, length, hidden))


class CLIPMLP(nnx.Module):
    def __init__(self, hidden: int, intermediate: int, act: str, *, dtype: str,
                 param_dtype: str):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=None)
        self.fc1 = Dense(hidden, intermediate, **kw)
        self.fc2 = Dense(intermediate, hidden, **kw)
        self.act = act

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.fc2(ACTIVATIONS[self.act](self.fc1(x)))


class CLIPEncoderLayer(nnx.Module):
    def __init__(self, hidden: int, heads: int, intermediate: int, act: str, eps: float, *,
                 dtype: str, param_dtype: str):
        kw = dict(dtype=dtype, param_dtype=param_dtype)
        self.layer_norm1 = LayerNorm(hidden, eps=eps, rngs=None, **kw)
        self.self_attn = CLIPAttention(hidden, heads, **kw)
        self.layer_norm2 = LayerNorm(hidden, eps=eps, rngs=None, **kw)
        self.mlp = CLIPMLP(hidden, intermediate, act, **kw)

    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        x = x + self.self_attn(self.layer_norm1(x), mask)
        return x + self.mlp(self.layer_norm2(x))


class CLIPEncoder(nnx.Module):
    def __init__(self, layers: list[CLIPEncoderLayer]):
        self.layers = nnx.List(layers)


class CLIPTextOutput(NamedTuple):
    """What `CLIPTextModel` returns (float32 arrays, whatever the compute dtype).

    last_hidden_state: (B, L, hidden), after the final LayerNorm (what diffusers' pipelines feed
      the UNet by default).
    pooled_output: (B, hidden), the last hidden state at the end-of-text token.
    penultimate_hidden_state: (B, L, hidden), the output of the second-to-last layer without the
      final LayerNorm (transformers' `hidden_states[-2]`, used for "clip skip").
    text_embeds: (B, projection_dim) projected pooled output, or None without a projection.
    hidden_states: None, or with `output_hidden_states` the num_hidden_layers + 1 states
      (embeddings, then each layer's output; no final LayerNorm), as transformers returns them.
    """

    last_hidden_state: jax.Array
    pooled_output: jax.Array
    penultimate_hidden_state: jax.Array
    text_embeds: jax.Array | None = None
    hidden_states: tuple[jax.Array, ...] | None = None


class CLIPTextModel(nnx.Module):
    """transformers' `CLIPTextModel` (`with_projection`: `CLIPTextModelWithProjection`).

    Args:
      vocab_size, hidden_size, intermediate_size, num_hidden_layers, num_attention_heads,
      max_position_embeddings, hidden_act, layer_norm_eps, eos_token_id: as in the config.json.
      with_projection: add the bias-free `text_projection` to `projection_dim`.
      dtype / param_dtype: compute and parameter dtype names; outputs are float32.
    """

    def __init__(self, *, vocab_size: int = 49408, hidden_size: int = 512,
                 intermediate_size: int = 2048, num_hidden_layers: int = 12,
                 num_attention_heads: int = 8, max_position_embeddings: int = 77,
                 hidden_act: str = "quick_gelu", layer_norm_eps: float = 1e-5,
                 eos_token_id: int = 49407, with_projection: bool = False,
                 projection_dim: int = 512, dtype: str = "float32",
                 param_dtype: str = "float32"):
        if hidden_act not in ACTIVATIONS:
            raise InputError(f"hidden_act {hidden_act!r} is not supported; choose one of "
                             f"{sorted(ACTIVATIONS)}")
        if hidden_size % num_attention_heads:
            raise InputError(f"hidden_size {hidden_size} is not a multiple of "
                             f"num_attention_heads {num_attention_heads}")
        check_dtypes(dtype, param_dtype)
        kw = dict(dtype=dtype, param_dtype=param_dtype)
        self.embeddings = CLIPTextEmbeddings(vocab_size, max_position_embeddings, hidden_size,
                                             param_dtype=param_dtype)
        self.encoder = CLIPEncoder([
            CLIPEncoderLayer(hidden_size, num_attention_heads, intermediate_size, hidden_act,
                             layer_norm_eps, **kw) for _ in range(num_hidden_layers)])
        self.final_layer_norm = LayerNorm(hidden_size, eps=layer_norm_eps, rngs=None, **kw)
        self.text_projection = (Dense(hidden_size, projection_dim, use_bias=False, rngs=None, **kw)
                                if with_projection else None)
        self.vocab_size = vocab_size
        self.max_position_embeddings = max_position_embeddings
        self.eos_token_id = eos_token_id
        self.dtype = dtype

    def check_inputs(self, input_ids, attention_mask=None) -> None:
        """Raises InputError for ids or a mask of the wrong shape, or ids outside the vocabulary
        (checked where the ids are concrete)."""
        shape = getattr(input_ids, "shape", None)
        if shape is None or len(shape) != 2 or not jnp.issubdtype(input_ids.dtype, jnp.integer):
            raise InputError(f"input_ids must be an integer array (batch, length); got "
                             f"{getattr(input_ids, 'dtype', type(input_ids).__name__)} {shape}")
        if not 1 <= shape[1] <= self.max_position_embeddings:
            raise InputError(f"input_ids has {shape[1]} tokens; this text encoder takes 1 to "
                             f"max_position_embeddings={self.max_position_embeddings}")
        if is_concrete(input_ids):
            ids = np.asarray(input_ids)
            if ids.size and (ids.min() < 0 or ids.max() >= self.vocab_size):
                raise InputError(f"input_ids must lie in [0, {self.vocab_size}); got values in "
                                 f"[{ids.min()}, {ids.max()}]")
        if attention_mask is not None and getattr(attention_mask, "shape", None) != shape:
            raise InputError(f"attention_mask must have the shape of input_ids {shape}; got "
                             f"{getattr(attention_mask, 'shape', type(attention_mask).__name__)}")

    def __call__(self, input_ids: jax.Array, attention_mask: jax.Array | None = None, *,
                 output_hidden_states: bool = False) -> CLIPTextOutput:
        """input_ids: int (B, L), L <= max_position_embeddings; attention_mask: (B, L) with 1 for
        tokens and 0 for padding, or None (all tokens seen, as diffusers' pipelines call it)."""
        b, length = input_ids.shape
        h = self.embeddings(input_ids).astype(DTYPES[self.dtype])
        mask = jnp.tril(jnp.ones((length, length), bool))[None, None]
        if attention_mask is not None:
            # transformers' create_causal_mask: causal AND the key is not padding.
            mask = mask & (jnp.asarray(attention_mask) != 0)[:, None, None, :]
        mask = jnp.broadcast_to(mask, (b, 1, length, length))
        states = [h]
        for layer in self.encoder.layers:
            h = layer(h, mask)
            states.append(h)
        last = self.final_layer_norm(h).astype(jnp.float32)
        if self.eos_token_id == 2:
            # Configs older than transformers PR #24773 say 2; the end-of-text id is the largest.
            eos_at = jnp.argmax(input_ids, axis=-1)
        else:
            eos_at = jnp.argmax((input_ids == self.eos_token_id).astype(jnp.int32), axis=-1)
        pooled = last[jnp.arange(b), eos_at]
        embeds = None
        if self.text_projection is not None:
            embeds = self.text_projection(pooled).astype(jnp.float32)
        penultimate = states[-2].astype(jnp.float32)
        return CLIPTextOutput(
            last, pooled, penultimate, embeds,
            tuple(s.astype(jnp.float32) for s in states) if output_hidden_states else None)


def initialise(model: CLIPTextModel, key: jax.Array) -> None:
    """Draws every Dense kernel LeCun normal N(0, 1/fan_in), the token embedding N(0, 0.02^2) and
    the position embedding N(0, 0.01^2) (OpenAI CLIP's initialisation), from one normal vector."""
    targets = []
    for _, node in nnx.iter_graph(model):
        if isinstance(node, Dense):
            targets.append((node.kernel, 1.0 / np.sqrt(node.kernel.shape[0])))
    targets.append((model.embeddings.token_embedding.embedding, 0.02))
    targets.append((model.embeddings.position_embedding.embedding, 0.01))
    sizes = [int(np.prod(var.shape)) for var, _ in targets]
    z = jax.random.normal(key, (sum(sizes),), jnp.float32)
    xp = np if is_concrete(z) else jnp
    z = xp.asarray(z)
    offset = 0
    for (var, std), n in zip(targets, sizes):
        var[...] = jnp.asarray((z[offset:offset + n].reshape(var.shape) * np.float32(std))
                               .astype(var.dtype))
        offset += n


def abstract_clip_text(kwargs: Mapping) -> tuple[nnx.GraphDef, Params]:
    """(graphdef, params as jax.ShapeDtypeStruct) without allocating any weight: the loader's
    target for `jaxdiff.pretrained.convert.convert_tensors`."""
    return split_params(nnx.eval_shape(lambda: CLIPTextModel(**kwargs)))


def init_clip_text(kwargs: Mapping, key: jax.Array) -> tuple[nnx.GraphDef, Params]:
    """Builds `CLIPTextModel(**kwargs)` with random weights from `key` (see `initialise`; biases
    0, LayerNorm scales 1); returns (graphdef, params) for `apply_clip_text`."""
    model = CLIPTextModel(**kwargs)
    initialise(model, key)
    return split_params(model)


def apply_clip_text(graphdef: nnx.GraphDef, params: Params, input_ids: jax.Array,
                    attention_mask: jax.Array | None = None, *,
                    output_hidden_states: bool = False) -> CLIPTextOutput:
    """Runs the text encoder (jitted when called eagerly; inlined inside an outer jit / scan).

    Args:
      graphdef, params: from `init_clip_text`, `abstract_clip_text` + the loader.
      input_ids: int (B, L) token ids, e.g. from `jaxdiff.tokenizer.CLIPTokenizer` (L = 77).
      attention_mask: optional (B, L), 1 for tokens and 0 for padding keys to hide.
      output_hidden_states: also return every layer's output.

    Returns:
      `CLIPTextOutput` (last_hidden_state (B, L, hidden), pooled_output (B, hidden), ...).
    """
    merge_params(graphdef, params).check_inputs(input_ids, attention_mask)
    return _apply_jit(graphdef, params, jnp.asarray(input_ids, jnp.int32),
                      None if attention_mask is None else jnp.asarray(attention_mask, jnp.int32),
                      bool(output_hidden_states))


@functools.partial(jax.jit, static_argnames=("graphdef", "output_hidden_states"))
def _apply_jit(graphdef, params, input_ids, attention_mask, output_hidden_states):
    return merge_params(graphdef, params)(input_ids, attention_mask,
                                          output_hidden_states=output_hidden_states)


# Keys of a transformers config.json that describe the torch side, training or generic
# PretrainedConfig behaviour, and change nothing in inference here.
_IGNORED_CONFIG_KEYS = (
    "torch_dtype", "dtype", "transformers_version", "attention_dropout", "dropout",
    "initializer_factor", "initializer_range", "bos_token_id", "pad_token_id",
    "chunk_size_feed_forward", "id2label", "label2id", "is_encoder_decoder", "output_attentions",
    "output_hidden_states", "problem_type", "return_dict", "tie_word_embeddings",
    "use_bfloat16", "tokenizer_class", "prefix", "task_specific_params")


def clip_text_kwargs_from_config(config: Mapping) -> dict:
    """A transformers text_encoder/config.json dict -> `CLIPTextModel` kwargs (float32; replace
    `dtype` / `param_dtype` for bfloat16).

    `architectures` naming `CLIPTextModelWithProjection` adds the text projection; other keys that
    only describe the torch side (see `_IGNORED_CONFIG_KEYS`, and any key starting with "_") are
    ignored.

    Raises:
      InputError naming an unknown key or an unsupported value.
    """
    from jaxdiff.models.diffusers_config import _Reader

    r = _Reader(config, "CLIPTextModel")
    r.require("model_type", "clip_text_model", ("clip_text_model",))
    for key in _IGNORED_CONFIG_KEYS:
        r.get(key, None)
    architectures = r.get("architectures", None) or ["CLIPTextModel"]
    accepted = ("CLIPTextModel", "CLIPTextModelWithProjection")
    if not isinstance(architectures, (list, tuple)) or any(a not in accepted
                                                           for a in architectures):
        r.fail("architectures", architectures, f"expected {' or '.join(accepted)}")
    hidden, heads = r.int("hidden_size", 512), r.int("num_attention_heads", 8)
    if hidden % heads:
        r.fail("num_attention_heads", heads, f"it must divide hidden_size {hidden}")
    eos = r.int("eos_token_id", 49407, minimum=0)
    with_projection = "CLIPTextModelWithProjection" in architectures
    projection_dim = (r.int("projection_dim", 512) if with_projection
                      else r.get("projection_dim", 512))
    kwargs = dict(
        vocab_size=r.int("vocab_size", 49408), hidden_size=hidden,
        intermediate_size=r.int("intermediate_size", 2048),
        num_hidden_layers=r.int("num_hidden_layers", 12), num_attention_heads=heads,
        max_position_embeddings=r.int("max_position_embeddings", 77),
        hidden_act=r.require("hidden_act", "quick_gelu", tuple(ACTIVATIONS)),
        layer_norm_eps=r.number("layer_norm_eps", 1e-5), eos_token_id=eos,
        with_projection=with_projection,
        projection_dim=projection_dim if with_projection else 512,
        dtype="float32", param_dtype="float32")
    r.finish()
    return kwargs
