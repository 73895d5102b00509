"""The EMA of the parameters moves once per optimizer update: under gradient accumulation
(optax.MultiSteps) not on every micro-batch, and not on a step skipped as non-finite."""

import jax
import jax.numpy as jnp
import numpy as np
from helpers import tiny_config

from jaxdiff import training


def _leaves64(tree):
    return [np.asarray(x, np.float64) for x in jax.tree.leaves(tree)]


def _micro_batches(config, count, seed=0):
    """Batches carrying their own t and noise, so each step's loss is fixed by the batch."""
    rng = np.random.default_rng(seed)
    size, channels = config.data.image_size, config.data.channels
    shape = (config.train.batch_size, size, size, channels)
    return [{"image": jnp.asarray(rng.uniform(-1, 1, shape), jnp.float32),
             "label": jnp.zeros(shape[0], jnp.int32),
             "t": jnp.asarray(rng.integers(0, config.diffusion.num_timesteps, shape[0]),
                              jnp.int32),
             "noise": jnp.asarray(rng.standard_normal(shape), jnp.float32)}
            for _ in range(count)]


def _build(config):
    graphdef, optimizer, state = training.init_train_state(config)
    schedule = training.schedule_from_config(config)
    return state, jax.jit(training.make_train_step(graphdef, schedule, optimizer, config))


def test_ema_under_accumulation_follows_a_float64_recurrence_over_the_applied_updates():
    accumulation, updates = 4, 3
    config = tiny_config(num_steps=accumulation * updates, ema_decay=0.9)
    config.optim.accumulation_steps = accumulation
    config.optim.learning_rate = 1e-2
    config.optim.warmup_steps = 0  # every update moves the parameters (warm-up starts at 0)
    state, step = _build(config)
    ema = _leaves64(state.params)
    previous = _leaves64(state.params)
    for s, batch in enumerate(_micro_batches(config, accumulation * updates)):
        state, _ = step(state, batch)
        params = _leaves64(state.params)
        changed = any(not np.array_equal(a, b) for a, b in zip(params, previous))
        assert changed == ((s + 1) % accumulation == 0), s  # MultiSteps applies every K-th
        if changed:
            n = s // accumulation  # updates before this one: EMA warm-up (1 + n) / (10 + n)
            decay = min(0.9, (1.0 + n) / (10.0 + n))
            ema = [decay * e + (1.0 - decay) * p for e, p in zip(ema, params)]
        previous = params
    for got, want in zip(_leaves64(state.ema_params), ema):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


def test_a_skipped_non_finite_step_leaves_the_ema_unchanged():
    config = tiny_config()
    state, step = _build(config)
    good, bad = _micro_batches(config, 2)
    state, _ = step(state, good)  # EMA now differs from the parameters
    bad["image"] = bad["image"].at[0, 0, 0, 0].set(jnp.nan)
    skipped, metrics = step(state, bad)
    assert int(metrics["nonfinite_consecutive"]) == 1
    for a, b in zip(_leaves64(skipped.ema_params), _leaves64(state.ema_params)):
        np.testing.assert_array_equal(a, b)
