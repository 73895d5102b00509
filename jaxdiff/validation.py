"""Argument checks shared by the public entry points.

They run outside `jit` on shapes, dtypes and (where the value is concrete) contents, so bad input
fails with a message naming the value and what is accepted, before anything is compiled.
"""

from __future__ import annotations

from collections.abc import Iterable

import jax
import jax.numpy as jnp
import numpy as np


class InputError(ValueError):
    """Bad user input found at an API or CLI boundary: a wrong value, shape, name, file or folder.

    The CLI prints exactly these (and their subclasses) as a one-paragraph message with exit code
    2; any other exception is a bug and keeps its traceback. Subclassing ValueError keeps callers
    that catch ValueError working.
    """


class InputTypeError(InputError, TypeError):
    """Bad user input of the wrong type (e.g. a list where an array is needed); also a TypeError,
    so callers that catch TypeError keep working."""


class InputFileNotFoundError(InputError, FileNotFoundError):
    """A file or folder the user named does not exist; also a FileNotFoundError."""


def check_int(value, what: str, minimum: int = 1, maximum: int | None = None) -> int:
    """Returns `value` as an int if it is an integer (not a bool) in [minimum, maximum], else
    raises InputError naming `what`, the value and the accepted range."""
    bad = isinstance(value, bool) or not isinstance(value, (int, np.integer))
    if bad or value < minimum or (maximum is not None and value > maximum):
        bounds = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise InputError(f"{what} must be an integer {bounds}; got {value!r}")
    return int(value)


def check_choice(kind: str, name, choices: Iterable[str]) -> str:
    """Returns `name` if it is one of `choices`, else raises InputError listing them."""
    choices = sorted(choices)
    if not isinstance(name, str) or name not in choices:
        raise InputError(f"unknown {kind} {name!r}; choose one of {choices}")
    return name


def check_images(x, what: str = "images") -> None:
    """Images must be a float array of rank 4 (NHWC)."""
    shape = getattr(x, "shape", None)
    dtype = getattr(x, "dtype", None)
    if shape is None or dtype is None:
        raise InputTypeError(f"{what} must be an array of shape (batch, height, width, channels); "
                             f"got {type(x).__name__}")
    if len(shape) != 4:
        raise InputError(f"{what} must be NHWC with rank 4 (batch, height, width, channels); "
                         f"got shape {tuple(shape)}")
    if not jnp.issubdtype(dtype, jnp.floating):
        raise InputTypeError(
            f"{what} must be floating point (float32 in [-1, 1]); got dtype {dtype}")


def is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def check_timesteps(t, batch: int, num_timesteps: int) -> None:
    """Timesteps must be integers of shape (batch,) in [0, num_timesteps)."""
    shape = getattr(t, "shape", None)
    dtype = getattr(t, "dtype", None)
    if shape is None or dtype is None:
        raise InputTypeError(f"timesteps must be an int32 array of shape ({batch},); "
                             f"got {type(t).__name__}")
    if tuple(shape) != (batch,):
        raise InputError(f"timesteps must have shape (batch,) = ({batch},); got {tuple(shape)}")
    if not jnp.issubdtype(dtype, jnp.integer):
        raise InputTypeError(f"timesteps must be integers (int32) in [0, {num_timesteps}); "
                             f"got dtype {dtype}")
    if is_concrete(t):
        values = np.asarray(t)
        if values.size and (values.min() < 0 or values.max() >= num_timesteps):
            raise InputError(f"timesteps must lie in [0, {num_timesteps}); got values from "
                             f"{values.min()} to {values.max()}")


def check_same_shape(a, b, what_a: str, what_b: str) -> None:
    if tuple(a.shape) != tuple(b.shape):
        raise InputError(f"{what_a} and {what_b} must have the same shape; got "
                         f"{tuple(a.shape)} and {tuple(b.shape)}")


def check_finite(x, what: str) -> None:
    """Raises InputError if a concrete array holds NaN or inf (skipped under tracing)."""
    if is_concrete(x) and not bool(np.all(np.isfinite(np.asarray(x)))):
        raise InputError(f"{what} contains NaN or infinite values")
