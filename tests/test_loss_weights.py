"""Loss weightings x prediction types x schedules: finite at every t, equal to float64 formulas,
and the one combination that cannot work (epsilon on a zero-terminal-SNR schedule) refused."""

import itertools

import jax.numpy as jnp
import numpy as np
import pytest
from helpers import tiny_config

from jaxdiff import losses
from jaxdiff.diffusion import PREDICTION_TYPES
from jaxdiff.schedules import SCHEDULES, make_schedule
from jaxdiff.validate_config import validate_config
from jaxdiff.validation import InputError

GAMMA = 5.0
T = 1000

ALLOWED = [(name, rescale, prediction, weighting)
           for name, rescale, prediction, weighting in itertools.product(
               sorted(SCHEDULES), (False, True), PREDICTION_TYPES, losses.WEIGHTINGS)
           if not (rescale and prediction == "epsilon")]


def reference_weight(alphas_cumprod, prediction_type, weighting, gamma=GAMMA):
    """Hang et al. 2023 eq. 8-9 in float64, with its limits where SNR is 0."""
    a = np.asarray(alphas_cumprod, np.float64)
    if weighting == "uniform":
        return np.ones_like(a)
    snr = a / (1.0 - a)
    clipped = np.minimum(snr, gamma)
    if prediction_type == "epsilon":
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(snr > 0, clipped / snr, 1.0)  # min(SNR, g) / SNR -> 1 as SNR -> 0
    if prediction_type == "v_prediction":
        return clipped / (snr + 1.0)
    return clipped


@pytest.mark.parametrize("name, rescale, prediction, weighting", ALLOWED)
def test_every_allowed_weighting_is_finite_and_matches_float64_at_every_t(
        name, rescale, prediction, weighting):
    schedule = make_schedule(name, T, rescale_to_zero_terminal_snr=rescale)
    t = jnp.arange(T, dtype=jnp.int32)
    weights = np.asarray(losses.loss_weight(schedule, t, prediction, weighting, GAMMA))
    assert np.all(np.isfinite(weights)), np.flatnonzero(~np.isfinite(weights))
    expected = reference_weight(schedule.alphas_cumprod, prediction, weighting)
    np.testing.assert_allclose(weights, expected, rtol=2e-6, atol=1e-12)
    if rescale:
        assert float(schedule.alphas_cumprod[-1]) == 0.0  # the sweep does reach SNR = 0


@pytest.mark.parametrize("name, rescale, prediction, weighting", ALLOWED)
def test_every_allowed_loss_is_finite_at_every_t(name, rescale, prediction, weighting):
    schedule = make_schedule(name, T, rescale_to_zero_terminal_snr=rescale)
    rng = np.random.default_rng(0)
    shape = (T, 2, 2, 1)
    x0, noise, output = (jnp.asarray(rng.standard_normal(shape), jnp.float32) for _ in range(3))
    loss = losses.diffusion_loss(schedule, output, x0, jnp.arange(T, dtype=jnp.int32), noise,
                                 prediction, weighting, GAMMA)
    assert loss.shape == (T,) and bool(jnp.all(jnp.isfinite(loss)))


def test_epsilon_prediction_on_a_zero_terminal_snr_schedule_is_refused_with_the_reason():
    config = tiny_config()
    config.diffusion.rescale_zero_terminal_snr = True
    config.diffusion.prediction_type = "epsilon"
    with pytest.raises(InputError, match="needs diffusion.prediction_type 'v_prediction' or "
                                         "'sample'; got 'epsilon'"):
        validate_config(config)
    for allowed in ("v_prediction", "sample"):
        config.diffusion.prediction_type = allowed
        validate_config(config)


def test_train_refuses_epsilon_with_zero_terminal_snr_before_writing_anything(tmp_path, capsys):
    from jaxdiff.cli import main

    workdir = tmp_path / "run"
    # epsilon named explicitly: the digits preset's own default is v prediction
    assert main(["train", "--workdir", str(workdir), "--config.diffusion.prediction_type=epsilon",
                 "--config.diffusion.rescale_zero_terminal_snr=True"]) == 2
    err = capsys.readouterr().err
    assert "needs diffusion.prediction_type 'v_prediction' or 'sample'" in err
    assert "Traceback" not in err and not workdir.exists()
