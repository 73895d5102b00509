"""Argument checks for `sample`, run on shapes, dtypes and concrete values before compiling."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff.validation import InputError, InputTypeError, is_concrete


def _concrete_scalar(value, what: str):
    """float(value) when concrete, None when traced; rejects non-scalars."""
    if np.ndim(value) != 0:
        raise InputError(f"{what} must be a scalar; got shape {np.shape(value)}")
    if not is_concrete(value):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InputTypeError(f"{what} must be a real number; got {value!r}") from None


def check_eta(eta) -> float | None:
    value = _concrete_scalar(eta, "eta")
    if value is not None and not (np.isfinite(value) and value >= 0):
        raise InputError(f"eta must be a finite number >= 0 (0 = deterministic DDIM, 1 = DDPM "
                         f"variance); got {eta!r}")
    return value


def check_noise_source(method: str, stochastic: bool, eta_value, key, noise, x_shape,
                       num_steps: int) -> str:
    """Returns "key", "keys" (one key per image), "array" or "none"; checks `noise` shape and
    that a stochastic run has one.

    ddpm always needs `key` or `noise`; ddim needs one unless eta is a concrete 0.
    """
    if key is not None and noise is not None:
        raise InputError("give either key or noise, not both")
    if noise is not None:
        want = (num_steps, *x_shape)
        if tuple(getattr(noise, "shape", ())) != want or not hasattr(noise, "dtype"):
            raise InputError(f"noise must be an array of shape (num_steps, *x_T.shape) = {want}; "
                             f"got {getattr(noise, 'shape', type(noise).__name__)}")
        if not jnp.issubdtype(noise.dtype, jnp.floating):
            raise InputTypeError(f"noise must be floating point; got dtype {noise.dtype}")
        return "array"
    if key is not None:
        dtype = getattr(key, "dtype", None)
        typed = dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)
        raw = dtype == jnp.uint32 and tuple(key.shape) == (2,)
        if typed and tuple(key.shape) == (x_shape[0],):
            return "keys"
        if not (typed and tuple(key.shape) == ()) and not raw:
            raise InputTypeError(f"key must be a single jax.random.key(seed) or one typed key per "
                                 f"image, shape ({x_shape[0]},); got "
                                 f"{getattr(key, 'shape', '')} {dtype or type(key).__name__}")
        return "key"
    needs = stochastic and (method != "ddim" or eta_value is None or eta_value > 0)
    if needs:
        why = "" if method != "ddim" else f" with eta={eta_value if eta_value is not None else 'traced'}"
        raise InputError(f"method {method!r}{why} draws noise: pass key=jax.random.key(seed) or "
                         f"noise of shape {(num_steps, *x_shape)}")
    return "none"


def check_guidance(labels, null_label, guidance_scale, batch: int) -> bool:
    """Checks classifier-free guidance arguments; returns whether labels are used."""
    g = _concrete_scalar(guidance_scale, "guidance_scale")
    if labels is None:
        if g is not None and g != 1.0:
            raise InputError(f"guidance_scale={guidance_scale!r} needs labels and null_label "
                             f"(classifier-free guidance); without labels use 1.0")
        return False
    if null_label is None:
        raise InputError("labels were given without null_label: pass the class index the model "
                         "was trained with for 'no label' (classifier-free guidance)")
    is_int = (isinstance(null_label, (int, np.integer)) and not isinstance(null_label, bool)) \
        or (hasattr(null_label, "dtype") and jnp.issubdtype(null_label.dtype, jnp.integer)
            and np.ndim(null_label) == 0)
    if not is_int:
        raise InputTypeError(f"null_label must be an integer >= 0; got {null_label!r}")
    if is_concrete(null_label) and int(null_label) < 0:
        raise InputError(f"null_label must be an integer >= 0; got {null_label!r}")
    if g is not None and not np.isfinite(g):
        raise InputError(f"guidance_scale must be finite; got {guidance_scale!r}")
    shape = getattr(labels, "shape", None)
    dtype = getattr(labels, "dtype", None)
    if shape is None or dtype is None or not jnp.issubdtype(dtype, jnp.integer):
        raise InputTypeError(f"labels must be an int32 array of shape ({batch},); got "
                             f"{dtype if dtype is not None else type(labels).__name__}")
    if tuple(shape) != (batch,):
        raise InputError(f"labels must have shape (batch,) = ({batch},); got {tuple(shape)}")
    if is_concrete(labels) and is_concrete(null_label):
        values, top = np.asarray(labels), int(null_label)
        if values.size and (values.min() < 0 or values.max() > top):
            raise InputError(f"labels must lie in [0, null_label] = [0, {top}]; got values from "
                             f"{values.min()} to {values.max()}")
    return True


def check_range(value, what: str, low: float, high: float | None = None, *,
                low_open: bool = False) -> None:
    """A concrete scalar must be finite and in [low, high] ((low, high] with low_open)."""
    v = _concrete_scalar(value, what)
    if v is None:
        return
    too_low = v <= low if low_open else v < low
    if not np.isfinite(v) or too_low or (high is not None and v > high):
        left = f"> {low}" if low_open else f">= {low}"
        rng = f"{left} and <= {high}" if high is not None else left
        raise InputError(f"{what} must be {rng}; got {value!r}")


def check_context(context, null_context, guidance_scale, batch: int) -> None:
    """Checks conditioning states for guidance: two float arrays (batch, ...) of one shape and
    rank >= 2 (e.g. text states (batch, tokens, dim)), and a finite guidance scale."""
    g = _concrete_scalar(guidance_scale, "guidance_scale")
    if g is not None and not np.isfinite(g):
        raise InputError(f"guidance_scale must be finite; got {guidance_scale!r}")
    for value, what in ((context, "context"), (null_context, "null_context")):
        shape, dtype = getattr(value, "shape", None), getattr(value, "dtype", None)
        if shape is None or dtype is None or not jnp.issubdtype(dtype, jnp.floating):
            raise InputTypeError(f"{what} must be a float array (batch, ...) such as text states "
                                 f"(batch, tokens, dim); got "
                                 f"{dtype if dtype is not None else type(value).__name__}")
        if len(shape) < 2 or shape[0] != batch:
            raise InputError(f"{what} must have shape ({batch}, ...) with rank >= 2 (batch "
                             f"first, as x_T); got {tuple(shape)}")
    if tuple(context.shape) != tuple(null_context.shape):
        raise InputError(f"null_context must have the shape of context {tuple(context.shape)}; "
                         f"got {tuple(null_context.shape)}")
