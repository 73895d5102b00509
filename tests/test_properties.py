"""Property tests (hypothesis) of the public math API: random valid shapes and dtypes work and
agree with float64 numpy; random invalid arguments raise exactly ValueError or TypeError with a
message naming what was given, before anything reaches XLA."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jaxdiff import diffusion, losses
from jaxdiff.sampling import sample, timesteps
from jaxdiff.schedules import SCHEDULES, make_schedule

SETTINGS = settings(max_examples=15, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])
SCHEDULE_NAMES = sorted(SCHEDULES)
PREDICTIONS = sorted(diffusion.PREDICTION_TYPES)
FLOATS = [np.float32, np.float16, jnp.bfloat16]


def _user_error(fn, *args, **kwargs) -> Exception:
    """Calls fn; asserts it raises a ValueError or TypeError (jaxdiff's InputError family) with a message."""
    with pytest.raises(Exception) as info:
        fn(*args, **kwargs)
    error = info.value
    assert isinstance(error, (ValueError, TypeError)), f"{type(error).__name__}: {error}"
    assert len(str(error)) > 10
    return error


@st.composite
def forward_case(draw, dtypes=(np.float32,)):
    """(schedule, x0, t, noise, float64 abar_t) with random shape, dtype and T."""
    name = draw(st.sampled_from(SCHEDULE_NAMES))
    num_timesteps = draw(st.integers(2, 1000))
    schedule = make_schedule(name, num_timesteps)
    shape = tuple(draw(st.integers(1, n)) for n in (3, 5, 5, 3))
    dtype = draw(st.sampled_from(dtypes))
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    x0 = rng.uniform(-1, 1, shape).astype(dtype)
    noise = rng.standard_normal(shape).astype(dtype)
    t = rng.integers(0, num_timesteps, shape[0]).astype(np.int32)
    return schedule, jnp.asarray(x0), jnp.asarray(t), jnp.asarray(noise)


def _abar64(schedule, t):
    betas = np.asarray(schedule.betas, np.float64)
    return np.cumprod(1.0 - betas)[np.asarray(t)].reshape(-1, 1, 1, 1)


@SETTINGS
@given(forward_case(dtypes=FLOATS))
def test_q_sample_and_velocity_match_float64_for_any_valid_shape_and_dtype(case):
    schedule, x0, t, noise = case
    abar = _abar64(schedule, t)
    x0_64, noise_64 = np.asarray(x0, np.float64), np.asarray(noise, np.float64)
    tol = 1e-5 if x0.dtype == jnp.float32 else 2e-2
    x_t = diffusion.q_sample(schedule, x0, t, noise)
    v = diffusion.velocity(schedule, x0, t, noise)
    assert x_t.shape == v.shape == x0.shape
    np.testing.assert_allclose(np.asarray(x_t, np.float64),
                               np.sqrt(abar) * x0_64 + np.sqrt(1 - abar) * noise_64,
                               atol=tol, rtol=tol)
    np.testing.assert_allclose(np.asarray(v, np.float64),
                               np.sqrt(abar) * noise_64 - np.sqrt(1 - abar) * x0_64,
                               atol=tol, rtol=tol)


@SETTINGS
@given(forward_case(), st.sampled_from(PREDICTIONS))
def test_to_x0_and_eps_inverts_the_target_of_every_prediction_type(case, prediction_type):
    schedule, x0, t, noise = case
    x_t = diffusion.q_sample(schedule, x0, t, noise)
    output = diffusion.target(schedule, x0, t, noise, prediction_type)
    x0_hat, eps_hat = diffusion.to_x0_and_eps(schedule, x_t, t, output, prediction_type)
    abar = _abar64(schedule, t)
    # float32 rounding of x_t is amplified by 1/sqrt(abar) (x0) or 1/sqrt(1 - abar) (eps)
    gain = 1.0 / np.sqrt(np.minimum(abar, 1 - abar)).min()
    np.testing.assert_allclose(np.asarray(x0_hat), np.asarray(x0), atol=2e-6 * gain + 1e-5)
    np.testing.assert_allclose(np.asarray(eps_hat), np.asarray(noise), atol=2e-6 * gain + 1e-5)


@SETTINGS
@given(forward_case(), st.sampled_from(PREDICTIONS), st.sampled_from(sorted(losses.WEIGHTINGS)))
def test_diffusion_loss_is_a_nonnegative_per_example_vector(case, prediction_type, weighting):
    schedule, x0, t, noise = case
    output = jnp.zeros_like(x0)
    loss = losses.diffusion_loss(schedule, output, x0, t, noise, prediction_type, weighting)
    assert loss.shape == (x0.shape[0],) and loss.dtype == jnp.float32
    assert np.all(np.asarray(loss) >= 0) and np.all(np.isfinite(np.asarray(loss)))
    if weighting == "uniform":
        target = np.asarray(diffusion.target(schedule, x0, t, noise, prediction_type), np.float64)
        expected = np.mean(target.reshape(len(target), -1) ** 2, axis=1)
        np.testing.assert_allclose(np.asarray(loss), expected, rtol=1e-5)


def _bad_forward_arguments(schedule, x0, t, noise):
    """(description, x0, t, noise) variants that each break one documented rule."""
    T, b = schedule.num_timesteps, x0.shape[0]
    return [
        ("x0 of rank 3", x0[0], t, noise[0]),
        ("x0 of rank 5", x0[None], t, noise[None]),
        ("integer x0", x0.astype(jnp.int32), t, noise),
        ("x0 as a list", x0.tolist(), t, noise),
        ("t of shape (b, 1)", x0, t[:, None], noise),
        ("t of the wrong length", x0, jnp.zeros((b + 1,), jnp.int32), noise),
        ("float t", x0, t.astype(jnp.float32), noise),
        ("t = T", x0, jnp.full((b,), T, jnp.int32), noise),
        ("t = -1", x0, jnp.full((b,), -1, jnp.int32), noise),
        ("noise with one more channel", x0, t, jnp.concatenate([noise, noise[..., :1]], -1)),
    ]


@SETTINGS
@given(forward_case(), st.integers(0, 9))
def test_q_sample_and_velocity_reject_bad_arguments_with_a_message(case, which):
    _description, x0, t, noise = _bad_forward_arguments(*case)[which]
    for fn in (diffusion.q_sample, diffusion.velocity):
        _user_error(fn, case[0], x0, t, noise)


@SETTINGS
@given(forward_case(), st.integers(0, 8), st.sampled_from(PREDICTIONS))
def test_to_x0_and_eps_rejects_bad_arguments_with_a_message(case, which, prediction_type):
    _description, x_t, t, _output = _bad_forward_arguments(*case)[which]
    _user_error(diffusion.to_x0_and_eps, case[0], x_t, t, case[3], prediction_type)


@SETTINGS
@given(forward_case(), st.integers(0, 9), st.sampled_from(PREDICTIONS))
def test_diffusion_loss_rejects_bad_arguments_with_a_message(case, which, prediction_type):
    schedule, _, _, _ = case
    _description, x0, t, noise = _bad_forward_arguments(*case)[which]
    output = case[1]
    _user_error(losses.diffusion_loss, schedule, output, x0, t, noise, prediction_type)


@SETTINGS
@given(forward_case(), st.sampled_from(["eps", "x0", "", "EPSILON", None, 3]))
def test_unknown_prediction_type_lists_the_accepted_ones(case, name):
    schedule, x0, t, noise = case
    for call in (lambda: diffusion.to_x0_and_eps(schedule, x0, t, noise, name),
                 lambda: diffusion.target(schedule, x0, t, noise, name),
                 lambda: losses.diffusion_loss(schedule, x0, x0, t, noise, name)):
        error = _user_error(call)
        assert "epsilon" in str(error) and "v_prediction" in str(error)


def test_a_non_schedule_is_rejected_with_a_message():
    x0 = jnp.zeros((2, 4, 4, 1))
    t = jnp.zeros((2,), jnp.int32)
    for schedule in ("linear", None, np.linspace(0.1, 0.2, 10)):
        error = _user_error(diffusion.q_sample, schedule, x0, t, x0)
        assert "NoiseSchedule" in str(error)


@SETTINGS
@given(st.sampled_from(SCHEDULE_NAMES), st.integers(2, 3000), st.booleans())
def test_make_schedule_gives_valid_betas_for_any_valid_length(name, num_timesteps, rescale):
    schedule = make_schedule(name, num_timesteps, rescale_to_zero_terminal_snr=rescale)
    betas, abar = np.asarray(schedule.betas), np.asarray(schedule.alphas_cumprod)
    assert betas.shape == abar.shape == (num_timesteps,) and betas.dtype == np.float32
    assert np.all((betas > 0) & (betas <= 1)) and np.all(np.diff(abar) <= 0)


@SETTINGS
@given(st.one_of(st.text(max_size=8).filter(lambda s: s not in SCHEDULES),
                 st.none(), st.integers()),
       st.one_of(st.integers(-5, 1), st.floats(2, 100), st.booleans(), st.text(max_size=3)))
def test_make_schedule_rejects_bad_names_and_lengths(name, num_timesteps):
    _user_error(make_schedule, name, 10)
    _user_error(make_schedule, "linear", num_timesteps)


@SETTINGS
@given(st.sampled_from(SCHEDULE_NAMES), st.sampled_from(["beta_min", "start", "eta"]))
def test_make_schedule_rejects_unknown_options(name, option):
    _user_error(make_schedule, name, 100, **{option: 0.1})


@SETTINGS
@given(st.integers(2, 1000), st.data(), st.sampled_from(["leading", "trailing", "linspace"]))
def test_timesteps_are_descending_int32_in_range(num_timesteps, data, spacing):
    num_steps = data.draw(st.integers(1, num_timesteps))
    ts = np.asarray(timesteps(make_schedule("linear", num_timesteps), num_steps, spacing))
    assert ts.shape == (num_steps,) and ts.dtype == np.int32
    assert np.all(np.diff(ts) < 0) and ts.min() >= 0 and ts.max() < num_timesteps


@SETTINGS
@given(st.integers(2, 1000), st.data())
def test_timesteps_reject_bad_counts_and_spacings(num_timesteps, data):
    schedule = make_schedule("linear", num_timesteps)
    bad_steps = data.draw(st.one_of(st.integers(-3, 0), st.integers(num_timesteps + 1, 5000),
                                    st.floats(1, 10), st.booleans(), st.none()))
    _user_error(timesteps, schedule, bad_steps, "leading")
    bad_spacing = data.draw(st.sampled_from(["lead", "", "Trailing", None, 1]))
    _user_error(timesteps, schedule, 1, bad_spacing)


def _eps_model(x, t):
    return 0.5 * x


@settings(max_examples=5, deadline=None, derandomize=True)
@given(st.sampled_from(["ddim", "dpmpp_2m", "euler", "heun"]), st.integers(1, 3),
       st.tuples(st.integers(1, 2), st.integers(1, 4), st.integers(1, 4), st.integers(1, 2)))
def test_sample_works_for_any_valid_shape(method, num_steps, shape):
    x_T = jax.random.normal(jax.random.key(0), shape)
    x0 = sample(_eps_model, make_schedule("linear", 50), x_T, method=method, num_steps=num_steps)
    assert x0.shape == shape and x0.dtype == jnp.float32
    assert np.all(np.isfinite(np.asarray(x0)))


SAMPLE_BAD = {
    "unknown method": {"method": "plms"},
    "num_steps 0": {"num_steps": 0},
    "num_steps > T": {"num_steps": 51},
    "float num_steps": {"num_steps": 2.5},
    "unknown spacing": {"spacing": "middle"},
    "unknown prediction type": {"prediction_type": "noise"},
    "negative eta": {"method": "ddim", "eta": -0.5},
    "NaN eta": {"method": "ddim", "eta": float("nan")},
    "ddpm without key or noise": {"method": "ddpm"},
    "key and noise": {"method": "ddpm", "key": jax.random.key(0),
                      "noise": jnp.zeros((2, 2, 4, 4, 1))},
    "noise of the wrong shape": {"method": "ddpm", "noise": jnp.zeros((3, 2, 4, 4, 1))},
    "raw uint32 key": {"method": "ddpm", "key": jax.random.PRNGKey(0)[None]},
    "x_T of rank 3": {"x_T": jnp.zeros((4, 4, 1))},
    "integer x_T": {"x_T": jnp.zeros((2, 4, 4, 1), jnp.int32)},
    "model_fn not callable": {"model_fn": 3},
    "schedule a string": {"schedule": "linear"},
    "guidance without labels": {"guidance_scale": 3.0},
    "labels without null_label": {"labels": jnp.zeros((2,), jnp.int32)},
    "labels of the wrong length": {"labels": jnp.zeros((3,), jnp.int32), "null_label": 10},
    "clip_sample not a bool": {"clip_sample": "yes"},
}


@SETTINGS
@given(st.sampled_from(sorted(SAMPLE_BAD)))
def test_sample_rejects_bad_arguments_before_compiling(which):
    arguments = {"model_fn": _eps_model, "schedule": make_schedule("linear", 50),
                     "x_T": jnp.zeros((2, 4, 4, 1)), "method": "ddim", "num_steps": 2}
    arguments.update(SAMPLE_BAD[which])
    model_fn, schedule, x_T = (arguments.pop(k) for k in ("model_fn", "schedule", "x_T"))
    _user_error(sample, model_fn, schedule, x_T, **arguments)
