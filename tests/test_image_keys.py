"""Per-image noise: the images of `generate_images` and `sample(key=per-image keys)` do not depend
on the batch they are drawn in."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiff.sampling import sample
from jaxdiff.sampling.image_keys import image_keys, initial_noise, step_noise_keys
from jaxdiff.schedules import make_schedule
from jaxdiff.validation import InputTypeError


def _model(x, t):
    return 0.1 * x + 1e-4 * t.astype(x.dtype)[:, None, None, None]


@pytest.mark.parametrize("method,eta", [("ddpm", 0.0), ("ddim", 0.9)])
def test_per_image_keys_make_draws_independent_of_batching(method, eta):
    schedule = make_schedule("linear", 1000)
    base = jax.random.key(3)

    def run(start, count):
        keys = image_keys(base, start, count)
        return np.asarray(sample(_model, schedule, initial_noise(keys, (4, 4, 1)), method=method,
                                 num_steps=5, eta=eta, key=step_noise_keys(keys)))

    whole = run(0, 6)
    parts = np.concatenate([run(0, 2), run(2, 3), run(5, 1)])
    np.testing.assert_array_equal(whole, parts)
    # and the images differ from each other (the keys are not shared)
    assert np.abs(whole[0] - whole[1]).max() > 0.1


def test_step_noise_is_independent_of_initial_noise():
    keys = image_keys(jax.random.key(0), 0, 1)
    x_T = initial_noise(keys, (16, 16, 1))
    first_step = jax.random.normal(jax.random.fold_in(step_noise_keys(keys)[0], 0), (16, 16, 1))
    assert abs(np.corrcoef(np.ravel(x_T), np.ravel(first_step))[0, 1]) < 0.2


def test_wrong_number_of_keys_is_refused():
    keys = image_keys(jax.random.key(0), 0, 3)
    with pytest.raises(InputTypeError, match=r"one typed key per image, shape \(2,\)"):
        sample(_model, make_schedule("linear", 1000), jnp.zeros((2, 4, 4, 1)), method="ddpm",
               num_steps=2, key=keys)


def test_generate_images_independent_of_batch_size():
    from jaxdiff.configs import get_config
    from jaxdiff.generate import generate_images
    from jaxdiff import training

    config = get_config("digits")
    config.model.base_channels = 8
    config.model.channel_mults = (1, 2)
    config.model.attention_resolutions = ()
    config.model.num_res_blocks = 1
    config.model.num_heads = 2
    config.model.num_groups = 4
    graphdef, _, state = training.init_train_state(config)
    params = state.ema_params
    kw = dict(num=5, seed=7, method="ddim", num_steps=3, eta=0.9)
    a = generate_images(config, graphdef, params, batch_size=5, **kw)
    b = generate_images(config, graphdef, params, batch_size=2, **kw)
    np.testing.assert_allclose(a, b, atol=1e-5)
