"""Schedules against float64 numpy formulas written here and published values."""

import math

import numpy as np
import pytest

from jaxdiff.schedules import from_betas, make_schedule

T = 1000


def reference_betas(name, n):
    if name == "linear":
        return np.linspace(1e-4, 0.02, n)
    if name == "scaled_linear":
        return np.linspace(math.sqrt(0.00085), math.sqrt(0.012), n) ** 2
    if name == "cosine":
        f = lambda u: math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
        return np.array([min(1 - f((i + 1) / n) / f(i / n), 0.999) for i in range(n)])
    if name == "sigmoid":
        return 1 / (1 + np.exp(-np.linspace(-6, 6, n))) * (0.02 - 1e-4) + 1e-4
    raise AssertionError(name)


@pytest.mark.parametrize("name", ["linear", "scaled_linear", "cosine", "sigmoid"])
@pytest.mark.parametrize("n", [10, 1000])
def test_schedule_matches_float64_formula(name, n):
    s = make_schedule(name, n)
    betas = reference_betas(name, n)
    abar = np.cumprod(1 - betas)
    np.testing.assert_allclose(s.betas, betas, rtol=1e-6)
    np.testing.assert_allclose(s.alphas, 1 - betas, rtol=1e-6)
    np.testing.assert_allclose(s.alphas_cumprod, abar, rtol=2e-6, atol=1e-12)
    np.testing.assert_allclose(s.sqrt_one_minus_alphas_cumprod, np.sqrt(1 - abar), rtol=1e-6)
    prev = np.append(1.0, abar[:-1])
    np.testing.assert_allclose(s.posterior_variance[1:],
                               (betas * (1 - prev) / (1 - abar))[1:], rtol=1e-5)
    assert s.alphas_cumprod.dtype == np.float32 and s.num_timesteps == n


# alphas_cumprod at t = 0, 499, 999 as computed by the diffusers DDPMScheduler (float32) with
# the same betas ("squaredcos_cap_v2" for cosine; 0.00085..0.012 for scaled_linear).
PUBLISHED = {
    "linear": (0.9999, 0.078587234, 4.0358304e-05),
    "scaled_linear": (0.99915, 0.27766943, 0.004660095),
    "cosine": (0.9999587, 0.49384347, 2.428735e-09),
    "sigmoid": (0.9998508, 0.301931, 3.968182e-05),
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_schedule_matches_published_values(name):
    s = make_schedule(name)
    np.testing.assert_allclose(np.asarray(s.alphas_cumprod)[[0, 499, 999]], PUBLISHED[name],
                               rtol=2e-5)


def test_linear_final_alpha_bar_is_about_4e_5():
    assert abs(float(make_schedule("linear").alphas_cumprod[-1]) - 4.04e-5) < 1e-7


def test_zero_terminal_snr_rescale():
    s = make_schedule("linear", rescale_to_zero_terminal_snr=True)
    abar = np.cumprod(1 - np.linspace(1e-4, 0.02, T))
    root = np.sqrt(abar)
    expected = ((root - root[-1]) * root[0] / (root[0] - root[-1])) ** 2
    np.testing.assert_allclose(s.alphas_cumprod, expected, rtol=1e-5, atol=1e-10)
    assert float(s.alphas_cumprod[-1]) == 0.0
    # published (diffusers, rescale_betas_zero_snr=True) value at t = 499
    np.testing.assert_allclose(s.alphas_cumprod[499], 0.07602873, rtol=2e-5)


def test_from_betas_equals_named_constructor():
    a = from_betas(np.linspace(1e-4, 0.02, 50))
    b = make_schedule("linear", 50)
    np.testing.assert_array_equal(a.alphas_cumprod, b.alphas_cumprod)


@pytest.mark.parametrize("bad, match", [
    (dict(name="quadratic"), "unknown schedule 'quadratic'; choose one of"),
    (dict(name="linear", num_timesteps=1), "num_timesteps must be an integer >= 2"),
    (dict(name="linear", num_timesteps=10.5), "num_timesteps must be an integer"),
    (dict(name="linear", bogus=1), "bad options"),
])
def test_bad_schedule_arguments_raise(bad, match):
    with pytest.raises(ValueError, match=match):
        make_schedule(**bad)


@pytest.mark.parametrize("betas", [[0.1, 1.5], [[0.1]], [0.1, float("nan")], []])
def test_bad_betas_raise(betas):
    with pytest.raises(ValueError, match="betas must be"):
        from_betas(betas)
