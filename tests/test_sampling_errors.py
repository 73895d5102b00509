"""Bad input to `sample` fails before compiling, with a message naming the value and what is
accepted."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gaussian_reference import eps_model_labeled, jax_model

from jaxdiff.sampling import sample
from jaxdiff.schedules import make_schedule

SCHEDULE = make_schedule("linear", 100)
X = np.zeros((2, 4, 4, 1), np.float32)
KEY = jax.random.key(0)


def _never_called(*args):
    raise AssertionError("the model must not be traced for bad input")


def _sample(**overrides):
    kwargs = {"method": "ddim", "num_steps": 5}
    kwargs.update(overrides)
    x = kwargs.pop("x", X)
    return sample(kwargs.pop("model_fn", _never_called), SCHEDULE, x, **kwargs)


LABELS = np.array([0, 1], np.int32)

BAD = [
    ({"method": "plms"}, ValueError, r"unknown sampler 'plms'; choose one of \['ddim', 'ddpm'"),
    ({"prediction_type": "x0"}, ValueError, r"unknown prediction_type 'x0'; choose one of"),
    ({"spacing": "uniform"}, ValueError, r"unknown spacing 'uniform'; choose one of"),
    ({"variance_type": "learned"}, ValueError, r"unknown variance_type 'learned'; choose one"),
    ({"num_steps": 0}, ValueError, r"num_steps must be in \[1, 100\].*got 0"),
    ({"num_steps": 101}, ValueError, r"num_steps must be in \[1, 100\].*got 101"),
    ({"num_steps": 5.0}, TypeError, r"num_steps must be an integer in \[1, 100\]; got 5.0"),
    ({"x": np.zeros((2, 4, 4), np.float32)}, ValueError, r"x_T must be NHWC with rank 4"),
    ({"x": np.zeros((2, 4, 4, 1), np.int32)}, TypeError, r"x_T must be floating point"),
    ({"x": [[0.0]]}, TypeError, r"x_T must be an array"),
    ({"method": "ddpm"}, ValueError, r"method 'ddpm' draws noise: pass key=jax.random.key"),
    ({"eta": 0.5}, ValueError, r"method 'ddim' with eta=0.5 draws noise: pass key"),
    ({"eta": -0.1, "key": KEY}, ValueError, r"eta must be a finite number >= 0.*got -0.1"),
    ({"eta": np.ones(2)}, ValueError, r"eta must be a scalar"),
    ({"method": "ddpm", "noise": np.zeros((4, 2, 4, 4, 1), np.float32)}, ValueError,
     (r"noise must be an array of shape \(num_steps, \*x_T.shape\) = \(5, 2, 4, 4, 1\); got "
     r"\(4, 2, 4, 4, 1\)")),
    ({"method": "ddpm", "noise": np.zeros((5, 2, 4, 4, 1), np.int32)}, TypeError,
     r"noise must be floating point"),
    ({"method": "ddpm", "key": KEY, "noise": np.zeros((5, 2, 4, 4, 1), np.float32)}, ValueError,
     r"either key or noise, not both"),
    ({"method": "ddpm", "key": 42}, TypeError, r"key must be a single jax.random.key"),
    # two keys for a batch of 2 are per-image keys; three are neither form
    ({"method": "ddpm", "key": jax.random.split(KEY, 3)}, TypeError,
     r"key must be a single jax.random.key\(seed\) or one typed key per image, shape \(2,\)"),
    ({"labels": LABELS}, ValueError, r"labels were given without null_label"),
    ({"labels": np.array([0, 1, 1], np.int32), "null_label": 3}, ValueError,
     r"labels must have shape \(batch,\) = \(2,\); got \(3,\)"),
    ({"labels": np.array([0.0, 1.0]), "null_label": 3}, TypeError, r"labels must be an int32"),
    ({"labels": np.array([0, 4], np.int32), "null_label": 3}, ValueError,
     r"labels must lie in \[0, null_label\] = \[0, 3\]; got values from 0 to 4"),
    ({"labels": np.array([-1, 0], np.int32), "null_label": 3}, ValueError,
     r"labels must lie in \[0, null_label\]"),
    ({"labels": LABELS, "null_label": 1.5}, TypeError, r"null_label must be an integer >= 0"),
    ({"labels": LABELS, "null_label": -1}, ValueError, r"null_label must be an integer >= 0"),
    ({"guidance_scale": 3.0}, ValueError, r"guidance_scale=3.0 needs labels and null_label"),
    ({"clip_sample": "yes"}, TypeError, r"clip_sample must be True or False; got 'yes'"),
    ({"clip_sample_range": 0.0}, ValueError, r"clip_sample_range must be > 0.0; got 0.0"),
    ({"thresholding": True, "dynamic_thresholding_ratio": 1.5}, ValueError,
     r"dynamic_thresholding_ratio must be > 0.0 and <= 1.0; got 1.5"),
    ({"thresholding": True, "clip_sample_range": 0.5}, ValueError,
     r"clip_sample_range \(the threshold's upper bound\) must be >= 1.0; got 0.5"),
    ({"model_fn": "unet"}, TypeError, r"model_fn must be callable"),
    ({"steps_offset": -1}, ValueError, r"steps_offset must be an integer >= 0"),
    ({"timestep_rule": "uniform"}, ValueError, r"unknown timestep_rule 'uniform'; choose one of"),
    ({"set_alpha_to_one": "no"}, TypeError, r"set_alpha_to_one must be True or False; got 'no'"),
]


@pytest.mark.parametrize("overrides,error,message", BAD,
                         ids=[str(sorted(o))[:40] for o, _, _ in BAD])
def test_bad_input_raises_before_compiling(overrides, error, message):
    with pytest.raises(error, match=message):
        _sample(**overrides)


def test_schedule_of_wrong_type_raises():
    with pytest.raises(TypeError, match="schedule must be a NoiseSchedule"):
        sample(_never_called, 1000, X, method="ddim", num_steps=5)


def test_unit_guidance_scale_without_labels_is_accepted():
    x0 = sample(jax_model("epsilon", SCHEDULE.alphas_cumprod, 0.0, 0.5), SCHEDULE, X,
                method="ddim", num_steps=5, guidance_scale=1.0)
    assert x0.shape == X.shape


def test_labels_equal_to_null_label_are_accepted():
    fn = jax.tree_util.Partial(eps_model_labeled, {
        "abar": SCHEDULE.alphas_cumprod, "mu": jnp.zeros((4, 4, 4, 1)), "s": jnp.float32(0.5)})
    x0 = sample(fn, SCHEDULE, X, method="ddim", num_steps=5,
                labels=np.array([3, 3], np.int32), null_label=3, guidance_scale=2.0)
    assert np.all(np.isfinite(x0))
