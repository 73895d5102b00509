"""`sample` as an API: parameterisations, guidance, compilation reuse, keys, bad input."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gaussian_reference import eps_model, eps_model_labeled, jax_model, output_np, reference

from jaxdiff.sampling import SAMPLERS, sample, timesteps
from jaxdiff.schedules import make_schedule

SCHEDULE = make_schedule("linear", 1000)
ABAR = np.asarray(SCHEDULE.alphas_cumprod)
SHAPE = (2, 3, 3, 2)
MU = np.linspace(-0.6, 0.7, 18).reshape(3, 3, 2)
X_T = np.random.default_rng(0).standard_normal(SHAPE).astype(np.float32)
NOISE = np.random.default_rng(1).standard_normal((6,) + SHAPE).astype(np.float32)
CLASS_MU = np.stack([MU, -MU, 0.5 * MU, np.zeros_like(MU)])  # classes 0..2, null label 3
LABELS = np.array([0, 2], np.int32)


def _labeled_model(params_scale=1.0, fn=eps_model_labeled):
    params = {"abar": jnp.asarray(ABAR), "mu": jnp.asarray(CLASS_MU * params_scale, jnp.float32),
              "s": jnp.float32(0.5)}
    return jax.tree_util.Partial(fn, params)


@pytest.mark.parametrize("method", sorted(SAMPLERS))
def test_epsilon_sample_and_v_parameterisations_give_same_samples(method):
    outs = [sample(jax_model(p, ABAR, MU, 0.5), SCHEDULE, X_T, method=method, num_steps=6,
                   prediction_type=p, spacing="trailing", eta=0.6, noise=NOISE,
                   return_trajectory=True)[0]
            for p in ("epsilon", "sample", "v_prediction")]
    np.testing.assert_allclose(outs[1], outs[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(outs[2], outs[0], rtol=1e-5, atol=1e-5)


def test_guidance_scale_one_equals_the_conditional_model():
    conditional = jax.tree_util.Partial(eps_model, {"abar": jnp.asarray(ABAR),
                                                    "mu": jnp.asarray(CLASS_MU[LABELS]),
                                                    "s": jnp.float32(0.5)})
    want = sample(conditional, SCHEDULE, X_T, method="ddim", num_steps=6, spacing="trailing")
    got = sample(_labeled_model(), SCHEDULE, X_T, method="ddim", num_steps=6,
                 spacing="trailing", labels=LABELS, null_label=3, guidance_scale=1.0)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_guided_ddim_matches_float64_reference_on_guided_output():
    g = 3.0

    def guided_np(x, t):
        cond = output_np("epsilon", ABAR[t], x, CLASS_MU[LABELS], 0.5)
        uncond = output_np("epsilon", ABAR[t], x, CLASS_MU[3], 0.5)
        return uncond + g * (cond - uncond)

    ts = timesteps(SCHEDULE, 6, "trailing")
    want, _, _ = reference("ddim", guided_np, ABAR, ts, X_T)
    got = sample(_labeled_model(), SCHEDULE, X_T, method="ddim", num_steps=6,
                 spacing="trailing", labels=LABELS, null_label=3, guidance_scale=g)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_guidance_makes_one_model_call_per_step_on_the_doubled_batch():
    seen = []

    def model(params, x, t, labels):
        seen.append((x.shape, t.shape, labels.shape))
        return eps_model_labeled(params, x, t, labels)

    sample(_labeled_model(fn=model), SCHEDULE, X_T, method="dpmpp_2m", num_steps=6,
           labels=LABELS, null_label=3, guidance_scale=2.0)
    assert seen == [((4, 3, 3, 2), (4,), (4,))]  # traced once: one call in the scan body


def _counting_model():
    """A fresh model function (so nothing is cached yet) that counts its traces."""
    count = {"n": 0}

    def model(params, x, t, labels):
        count["n"] += 1
        return eps_model_labeled(params, x, t, labels)

    return model, count


@pytest.mark.parametrize("method", ["ddim", "heun"])
def test_new_guidance_scale_eta_params_and_key_do_not_recompile(method):
    model, count = _counting_model()
    run = {"method": method, "num_steps": 6, "labels": LABELS, "null_label": 3}
    # the first call compiles; later ones with new traced values must reuse it
    sample(_labeled_model(fn=model), SCHEDULE, X_T, guidance_scale=2.0, eta=0.0,
           key=jax.random.key(0), **run)
    traces = count["n"]
    assert traces >= 1
    for g, eta, scale, seed in [(5.0, 0.5, 1.0, 1), (1.0, 1.0, 2.0, 2), (7.5, 0.3, -1.0, 3)]:
        sample(_labeled_model(scale, fn=model), SCHEDULE, X_T, guidance_scale=g, eta=eta,
               key=jax.random.key(seed), **run)
    assert count["n"] == traces


def test_new_spacing_offset_rule_and_final_alpha_do_not_recompile():
    model, count = _counting_model()
    run = {"method": "ddim", "num_steps": 6, "labels": LABELS, "null_label": 3}
    first = sample(_labeled_model(fn=model), SCHEDULE, X_T, **run)
    traces = count["n"]
    outs = [sample(_labeled_model(fn=model), SCHEDULE, X_T, spacing=spacing, steps_offset=offset,
                   timestep_rule=rule, set_alpha_to_one=one, **run)
            for spacing, offset, rule, one in [("trailing", 0, "diffusers", False),
                                               ("linspace", 0, "shared", True),
                                               ("leading", 1, "diffusers", False)]]
    assert count["n"] == traces
    assert all(not np.allclose(out, first) for out in outs)


def test_new_partial_params_change_the_samples_without_recompiling():
    model, count = _counting_model()
    run = {"method": "euler", "num_steps": 6, "labels": LABELS, "null_label": 3, "guidance_scale": 2.0}
    a = sample(_labeled_model(1.0, fn=model), SCHEDULE, X_T, **run)
    traces = count["n"]
    b = sample(_labeled_model(2.0, fn=model), SCHEDULE, X_T, **run)
    assert count["n"] == traces
    assert not np.allclose(a, b)


def test_sample_works_inside_jit_with_traced_guidance_scale():
    fn = _labeled_model()

    @jax.jit
    def run(x, g, eta, noise):
        return sample(fn, SCHEDULE, x, method="ddim", num_steps=6, spacing="trailing",
                      labels=jnp.asarray(LABELS), null_label=3, guidance_scale=g, eta=eta,
                      noise=noise)

    got = run(jnp.asarray(X_T), 3.0, 0.5, NOISE)
    want = sample(fn, SCHEDULE, X_T, method="ddim", num_steps=6, spacing="trailing",
                  labels=LABELS, null_label=3, guidance_scale=3.0, eta=0.5, noise=NOISE)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_same_key_gives_same_samples_and_new_key_new_samples():
    fn = jax_model("epsilon", ABAR, MU, 0.5)
    run = {"method": "ddpm", "num_steps": 6, "key": None}
    a, b, c = (sample(fn, SCHEDULE, X_T, **{**run, "key": jax.random.key(k)}) for k in (7, 7, 8))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_step_that_adds_no_noise_ignores_its_draw():
    # "leading" ends at t = 0, where DDPM adds no noise: noise[-1] is not used
    fn = jax_model("epsilon", ABAR, MU, 0.5)
    other = NOISE.copy()
    other[-1] = 100.0
    a, b = (sample(fn, SCHEDULE, X_T, method="ddpm", num_steps=6, noise=z,
                   return_trajectory=True)[0] for z in (NOISE, other))
    np.testing.assert_array_equal(a, b)


def test_ode_methods_need_no_key_and_ddim_eta_zero_is_deterministic():
    fn = jax_model("epsilon", ABAR, MU, 0.5)
    for method in ("ddim", "dpmpp_2m", "euler", "heun"):
        x0, _ = sample(fn, SCHEDULE, X_T, method=method, num_steps=6, return_trajectory=True)
        assert x0.shape == SHAPE and x0.dtype == jnp.float32 and np.all(np.isfinite(x0))


def test_trajectory_has_documented_shapes():
    x0, traj = sample(jax_model("epsilon", ABAR, MU, 0.5), SCHEDULE, X_T, method="dpmpp_2m",
                      num_steps=6, return_trajectory=True)
    assert set(traj) == {"x_t", "pred_x0", "timesteps"}
    assert traj["x_t"].shape == traj["pred_x0"].shape == (6,) + SHAPE
    np.testing.assert_array_equal(traj["timesteps"], timesteps(SCHEDULE, 6, method="dpmpp_2m"))
    np.testing.assert_array_equal(traj["x_t"][0], X_T)
    np.testing.assert_array_equal(x0, traj["pred_x0"][-1])  # last step to sigma = 0 returns x0
