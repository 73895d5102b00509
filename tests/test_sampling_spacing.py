"""Timestep spacings: the lists diffusers' DDIM/DDPM schedulers make (the per-method lists of
DPM-Solver++, Euler and Heun are checked against diffusers in test_sampling_diffusers_parity.py),
where each step goes, and bad arguments."""

from __future__ import annotations

import numpy as np
import pytest

from jaxdiff.sampling import SAMPLERS, timesteps
from jaxdiff.sampling.spacing import next_timesteps
from jaxdiff.schedules import make_schedule


def diffusers_rule(spacing, T, n, steps_offset=0):
    """diffusers DDIMScheduler.set_timesteps (0.42), re-derived in numpy."""
    if spacing == "linspace":
        return np.linspace(0, T - 1, n).round()[::-1].astype(np.int64)
    if spacing == "leading":
        ratio = T // n
        return (np.arange(0, n) * ratio).round()[::-1].astype(np.int64) + steps_offset
    ratio = T / n
    return np.round(np.arange(T, 0, -ratio)).astype(np.int64) - 1


# verified once against diffusers 0.42.1 DDIMScheduler and DDPMScheduler
HARD_CODED = [
    ("leading", 10, 1, [901, 801, 701, 601, 501, 401, 301, 201, 101, 1]),
    ("leading", 7, 0, [852, 710, 568, 426, 284, 142, 0]),
    ("trailing", 7, 0, [999, 856, 713, 570, 428, 285, 142]),
    ("linspace", 7, 0, [999, 832, 666, 500, 333, 166, 0]),
    ("linspace", 10, 0, [999, 888, 777, 666, 555, 444, 333, 222, 111, 0]),
]


@pytest.mark.parametrize("spacing,n,offset,expected", HARD_CODED)
def test_timesteps_equal_lists_made_by_diffusers(spacing, n, offset, expected):
    np.testing.assert_array_equal(timesteps(1000, n, spacing, steps_offset=offset), expected)


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("T", [1000, 999, 100, 7])
def test_timesteps_follow_diffusers_rule_for_every_num_steps(spacing, T):
    for n in range(1, T + 1):
        want = diffusers_rule(spacing, T, n)[:n]  # diffusers' "trailing" is one too long for a few n
        got = timesteps(T, n, spacing)
        assert got.dtype == np.int32 and got.shape == (n,)
        np.testing.assert_array_equal(got, want, err_msg=f"{spacing} T={T} n={n}")


def test_timesteps_are_descending_and_in_range():
    for spacing in ("leading", "trailing", "linspace"):
        for n in (1, 2, 3, 50, 61, 999, 1000):
            ts = timesteps(1000, n, spacing)
            assert np.all(np.diff(ts) < 0) and ts.min() >= 0 and ts.max() <= 999


def test_trailing_where_diffusers_list_is_one_too_long_keeps_first_num_steps():
    # np.arange(1000, 0, -1000 / 61) has 62 elements (the last rounds to -1 after the shift)
    np.testing.assert_array_equal(timesteps(1000, 61, "trailing")[-4:], [65, 48, 32, 15])


def test_timesteps_accept_a_schedule():
    np.testing.assert_array_equal(timesteps(make_schedule("linear", 100), 4, "trailing"),
                                  [99, 74, 49, 24])


def test_steps_offset_applies_only_to_leading():
    np.testing.assert_array_equal(timesteps(1000, 4, "trailing", steps_offset=1),
                                  timesteps(1000, 4, "trailing"))
    np.testing.assert_array_equal(timesteps(1000, 4, "leading", steps_offset=1),
                                  [751, 501, 251, 1])


@pytest.mark.parametrize("method", sorted(SAMPLERS))
def test_shared_rule_gives_every_method_the_ddim_list(method):
    for spacing in ("leading", "trailing", "linspace"):
        np.testing.assert_array_equal(
            timesteps(1000, 7, spacing, 1, method=method, rule="shared"),
            timesteps(1000, 7, spacing, 1))
        assert timesteps(1000, 7, spacing, method=method, rule="shared").dtype == np.int32


def test_fractional_linspace_of_euler_and_heun_is_not_rounded():
    for method in ("euler", "heun"):
        ts = timesteps(1000, 12, "linspace", method=method)
        assert ts.dtype == np.float32
        np.testing.assert_allclose(ts, np.linspace(999, 0, 12), rtol=1e-7)
        assert ts[1] != np.round(ts[1])  # 908.18...


def test_dpm_solver_lists_drop_the_last_of_n_plus_one_points():
    np.testing.assert_array_equal(timesteps(1000, 4, "linspace", method="dpmpp_2m"),
                                  [999, 749, 500, 250])  # round(999 k / 4), k = 4..1
    np.testing.assert_array_equal(timesteps(1000, 4, "leading", 1, method="dpmpp_2m"),
                                  [801, 601, 401, 201])  # 200 k + 1, k = 4..1


def test_ddim_steps_to_t_minus_T_over_n_and_others_to_the_next_listed_timestep():
    ts = timesteps(1000, 7, "linspace")  # 999, 832, 666, 500, 333, 166, 0; T // n = 142
    np.testing.assert_array_equal(next_timesteps(ts, 1000, "ddim"),
                                  [857, 690, 524, 358, 191, 24, -1])
    listed = [832, 666, 500, 333, 166, 0, -1]
    np.testing.assert_array_equal(next_timesteps(ts, 1000, "ddim", "shared"), listed)
    for method in ("ddpm", "dpmpp_2m", "euler", "heun"):
        np.testing.assert_array_equal(next_timesteps(ts, 1000, method), listed)


@pytest.mark.parametrize("method,spacing", [("dpmpp_2m", "leading"), ("dpmpp_2m", "linspace")])
def test_a_list_that_repeats_timesteps_raises(method, spacing):
    with pytest.raises(ValueError, match=rf"spacing '{spacing}' for dpmpp_2m with num_steps=100 "
                                         r"repeats timesteps"):
        timesteps(100, 100, spacing, method=method)


def test_unknown_rule_or_method_raises_listing_choices():
    with pytest.raises(ValueError, match=r"unknown timestep rule 'uniform'; choose one of"):
        timesteps(1000, 10, rule="uniform")
    with pytest.raises(ValueError, match=r"unknown sampler 'plms'; choose one of"):
        timesteps(1000, 10, method="plms")


@pytest.mark.parametrize("n", [0, -3, 1001])
def test_num_steps_outside_range_raises_naming_value_and_range(n):
    with pytest.raises(ValueError, match=rf"num_steps must be in \[1, 1000\].*got {n}"):
        timesteps(1000, n)


@pytest.mark.parametrize("n", [2.0, "10", True, None])
def test_num_steps_not_an_int_raises(n):
    with pytest.raises(TypeError, match="num_steps must be an integer"):
        timesteps(1000, n)


def test_unknown_spacing_raises_listing_choices():
    with pytest.raises(ValueError, match=r"unknown spacing 'uniform'; choose one of \['leading'"):
        timesteps(1000, 10, "uniform")


def test_steps_offset_past_last_timestep_raises():
    with pytest.raises(ValueError, match=r"steps_offset=1 gives timesteps from 1 to 1000"):
        timesteps(1000, 1000, "leading", steps_offset=1)


@pytest.mark.parametrize("offset", [-1, 0.5])
def test_bad_steps_offset_raises(offset):
    with pytest.raises(ValueError, match="steps_offset must be an integer >= 0"):
        timesteps(1000, 10, "leading", steps_offset=offset)
