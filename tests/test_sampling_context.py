"""Classifier-free guidance on conditioning states (text contexts) in `jaxdiff.sampling.sample`."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiff.sampling import sample
from jaxdiff.schedules import make_schedule
from jaxdiff.validation import InputError

SCHEDULE = make_schedule("scaled_linear")
X_T = jax.random.normal(jax.random.key(0), (3, 4, 4, 2))
COND = jax.random.normal(jax.random.key(1), (3, 5, 2))
UNCOND = jax.random.normal(jax.random.key(2), (3, 5, 2))


def text_model(x, t, states):
    """A toy eps model that reads its per-example states (B, tokens, C)."""
    return 0.8 * x + 0.3 * jnp.tanh(states.mean(axis=1))[:, None, None, :] \
        + 1e-4 * t[:, None, None, None]


@pytest.mark.parametrize("method", ["ddim", "euler", "dpmpp_2m"])
@pytest.mark.parametrize("g", [1.0, 7.5])
def test_context_guidance_mixes_per_example_outputs(method, g):
    def mixed(x, t):  # the guided model written out: uncond + g (cond - uncond)
        uncond = text_model(x, t, UNCOND)
        return uncond + g * (text_model(x, t, COND) - uncond)

    want = sample(mixed, SCHEDULE, X_T, method=method, num_steps=6, spacing="leading")
    got = sample(text_model, SCHEDULE, X_T, method=method, num_steps=6, spacing="leading",
                 context=COND, null_context=UNCOND, guidance_scale=g)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=2e-5, rtol=1e-5)


def test_context_with_labels_is_refused():
    with pytest.raises(InputError, match="not both"):
        sample(text_model, SCHEDULE, X_T, method="ddim", num_steps=4, context=COND,
               null_context=UNCOND, labels=jnp.zeros((3,), jnp.int32), null_label=1)


def test_null_context_of_another_shape_is_refused():
    with pytest.raises(InputError, match="null_context must have the shape"):
        sample(text_model, SCHEDULE, X_T, method="ddim", num_steps=4, context=COND,
               null_context=UNCOND[:, :3])
