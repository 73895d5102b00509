"""Flow matching: the loss, the training-time distribution of u, and the flow samplers against
the closed-form velocity field of Gaussian data and against diffusers' scheduler."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiff import flow, losses
from jaxdiff.generate import check_method_fits_objective
from jaxdiff.sampling import sample
from jaxdiff.sampling.flow import flow_sigmas, flux_mu, sample_flow
from jaxdiff.schedules import make_schedule
from jaxdiff.validation import InputError

MU, STD = 0.7, 0.4  # the data distribution N(MU, STD^2) of the Gaussian tests


def gaussian_velocity_float64(x, u):
    """E[noise - x0 | x_u = x] for x0 ~ N(MU, STD^2), x_u = (1 - u) x0 + u noise (float64)."""
    a, b = 1.0 - u, u
    var = a * a * STD ** 2 + b * b
    centred = x - a * MU
    return b / var * centred - (MU + a * STD ** 2 / var * centred)


def gaussian_velocity_model(x, t):
    u = (t / 1000.0).reshape((-1,) + (1,) * (x.ndim - 1))
    a, b = 1.0 - u, u
    var = a * a * STD ** 2 + b * b
    centred = x - a * MU
    return b / var * centred - (MU + a * STD ** 2 / var * centred)


def test_flow_loss_equals_float64_mse():
    rng = np.random.default_rng(0)
    x0, noise, out = (rng.normal(size=(3, 4, 4, 2)).astype(np.float32) for _ in range(3))
    got = np.asarray(losses.flow_matching_loss(jnp.asarray(out), jnp.asarray(x0),
                                               jnp.asarray(noise)))
    want = np.mean((out.astype(np.float64) - (noise.astype(np.float64) - x0)) ** 2,
                   axis=(1, 2, 3))
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_flow_train_step_loss_is_mse_of_model_velocity_at_interpolated_input():
    from helpers import tiny_config

    from jaxdiff import training
    from jaxdiff.models import apply_model

    config = tiny_config("digits_flow")
    config.model.image_size = 8
    graphdef, optimizer, state = training.init_train_state(config)
    step = training.make_train_step(graphdef, training.schedule_from_config(config), optimizer,
                                    config)
    rng = np.random.default_rng(1)
    x0 = rng.uniform(-1, 1, (8, 8, 8, 1)).astype(np.float32)
    noise = rng.normal(size=x0.shape).astype(np.float32)
    u = rng.uniform(0, 1, 8).astype(np.float32)
    _, metrics = jax.jit(step)(state, {"image": x0, "noise": noise, "u": u})
    x_u = (1 - u.astype(np.float64)[:, None, None, None]) * x0 + u[:, None, None, None] * noise
    out = np.asarray(apply_model(graphdef, state.params, jnp.asarray(x_u, jnp.float32),
                                 jnp.asarray(1000.0 * u, jnp.float32)), np.float64)
    want = np.mean((out - (noise.astype(np.float64) - x0)) ** 2)
    np.testing.assert_allclose(float(metrics["loss"]), want, rtol=1e-4)


def test_logit_normal_times_with_sd3_shift_have_the_shifted_median():
    u = np.asarray(flow.sample_u(jax.random.key(0), 200_000, "logit_normal", 0.0, 1.0, 3.0))
    # sigmoid(N(0, 1)) has median 1/2; the shift maps it to 3 (1/2) / (1 + 2 (1/2)) = 3/4
    assert abs(np.median(u) - 0.75) < 0.005
    # undo the shift (u0 = u / (shift - (shift - 1) u)): the logit is N(0, 1) again
    u0 = u / (3.0 - 2.0 * u)
    logit = np.log(u0 / (1 - u0))
    assert abs(logit.mean()) < 0.01 and abs(logit.std() - 1.0) < 0.01


def test_bad_time_sampling_is_refused_with_the_accepted_names():
    with pytest.raises(InputError, match="logit_normal"):
        flow.sample_u(jax.random.key(0), 4, "beta")


def _endpoint_error(method, num_steps):
    z = np.linspace(-2.5, 2.5, 11).reshape(11, 1, 1, 1).astype(np.float32)
    x0 = sample_flow(gaussian_velocity_model, jnp.asarray(z), method=method, num_steps=num_steps)
    # the exact flow of N(0, 1) to N(MU, STD^2) is affine: z -> MU + STD z
    return np.max(np.abs(np.asarray(x0, np.float64) - (MU + STD * z.astype(np.float64))))


@pytest.mark.parametrize(("method", "order"), [("flow_euler", 1), ("flow_heun", 2)])
def test_flow_sampler_converges_to_the_gaussian_with_its_order(method, order):
    steps = (4, 8, 16, 32)
    errors = [_endpoint_error(method, n) for n in steps]
    slopes = -np.diff(np.log(errors)) / np.log(2.0)
    assert np.all(np.abs(slopes[1:] - order) < 0.25), (errors, slopes)
    assert errors[-1] < (1e-1 if order == 1 else 1e-3)


def _diffusers_scheduler(shift, dynamic):
    diffusers = pytest.importorskip("diffusers")
    return diffusers.FlowMatchEulerDiscreteScheduler(shift=shift, use_dynamic_shifting=dynamic)


@pytest.mark.parametrize(("shift", "mu"), [(1.0, None), (3.0, None), (1.0, flux_mu(1024))])
def test_flow_euler_sigmas_and_updates_equal_diffusers(shift, mu):
    import torch

    num_steps = 7
    scheduler = _diffusers_scheduler(shift, mu is not None)
    scheduler.set_timesteps(num_steps, mu=mu)
    sigmas, timesteps = flow_sigmas(num_steps, shift, mu)
    np.testing.assert_allclose(sigmas, scheduler.sigmas.numpy(), atol=1e-6, rtol=0)
    np.testing.assert_allclose(timesteps, scheduler.timesteps.numpy(), atol=1e-4, rtol=0)

    def velocity_jax(x, t):
        return -0.7 * x + jnp.sin(x) * (t / 1000.0).reshape(-1, 1, 1, 1)

    x_T = np.random.default_rng(2).normal(size=(2, 4, 4, 3)).astype(np.float32)
    x0, trajectory = sample_flow(velocity_jax, jnp.asarray(x_T), method="flow_euler",
                                 num_steps=num_steps, shift=shift, mu=mu, return_trajectory=True)
    x = torch.from_numpy(x_T)
    states = []
    for t in scheduler.timesteps:
        states.append(x.numpy().copy())
        v = -0.7 * x + torch.sin(x) * (t / 1000.0)
        x = scheduler.step(v, t, x).prev_sample
    np.testing.assert_allclose(np.asarray(trajectory["x_t"]), np.stack(states), atol=1e-5)
    np.testing.assert_allclose(np.asarray(trajectory["timesteps"]), scheduler.timesteps.numpy(),
                               atol=1e-4)
    np.testing.assert_allclose(np.asarray(x0), x.numpy(), atol=1e-5)


def test_flow_guidance_mixes_the_velocities_of_label_and_null_label():
    def model(x, t, labels):
        return -x + labels.astype(x.dtype).reshape(-1, 1, 1, 1) * (t / 1000.0).reshape(-1, 1, 1, 1)

    x_T = np.random.default_rng(3).normal(size=(2, 2, 2, 1))
    labels, null, g = np.array([1, 3], np.int32), 5, 2.5
    got = sample(model, make_schedule("linear"), jnp.asarray(x_T, jnp.float32),
                 method="flow_euler", num_steps=3, labels=jnp.asarray(labels), null_label=null,
                 guidance_scale=g)
    sigmas, _ = flow_sigmas(3)
    x = x_T.copy()
    for u, u_next in zip(sigmas[:-1].astype(np.float64), sigmas[1:]):
        cond = -x + labels.reshape(-1, 1, 1, 1) * u
        uncond = -x + null * u
        x = x + (u_next - u) * (uncond + g * (cond - uncond))
    np.testing.assert_allclose(np.asarray(got), x, atol=1e-5)


def test_sampler_family_must_fit_the_run_objective():
    with pytest.raises(InputError, match="flow_euler"):
        check_method_fits_objective("ddim", "flow")
    with pytest.raises(InputError, match="flow-matching"):
        check_method_fits_objective("flow_heun", "diffusion")
    check_method_fits_objective("flow_heun", "flow")
    check_method_fits_objective("ddim", "diffusion")


def test_cli_samples_a_flow_run_with_its_preset_method_and_refuses_ddim(tmp_path, capsys):
    from untrained_run import make_untrained_run

    from jaxdiff.cli import main

    run = make_untrained_run(tmp_path / "flow", "digits_flow")
    out = tmp_path / "s.png"
    assert main(["sample", "--workdir", str(run), "--num", "2", "--steps", "2",
                 "--out", str(out)]) == 0
    assert out.is_file() and "flow_heun" in capsys.readouterr().err
    assert main(["sample", "--workdir", str(run), "--num", "2", "--method", "ddim"]) == 2
    assert "flow_euler" in capsys.readouterr().err
