"""Per-image random keys for generating many images in batches.

Image i of a generation with seed key K draws everything from `fold_in(K, i)` alone: its x_T
from `fold_in(fold_in(K, i), 0)` and its step noise from keys under `fold_in(fold_in(K, i), 1)`
(see `sample(key=...)` with one key per image). So the same seed gives the same images whatever
the batch size, the padding of the last batch or the number of devices.

Example:
  >>> import jax
  >>> keys = image_keys(jax.random.key(0), start=4, count=2)   # images 4 and 5
  >>> initial_noise(keys, (8, 8, 1)).shape
  (2, 8, 8, 1)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def image_keys(seed_key: jax.Array, start: int, count: int) -> jax.Array:
    """Typed keys (count,) of images start, ..., start + count - 1."""
    return jax.vmap(jax.random.fold_in, (None, 0))(seed_key, jnp.arange(start, start + count))


def initial_noise(keys: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
    """x_T (len(keys), *shape): a standard normal draw per image key."""
    return jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, 0), shape, dtype))(keys)


def step_noise_keys(keys: jax.Array) -> jax.Array:
    """The per-image keys to pass as `sample(key=...)`: independent of `initial_noise`'s."""
    return jax.vmap(lambda k: jax.random.fold_in(k, 1))(keys)
