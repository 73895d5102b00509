"""Test helpers: the exact denoiser for Gaussian data and float64 numpy reference samplers.

For data x0 ~ N(mu, s^2 I) and x_t = sqrt(a) x0 + sqrt(1 - a) eps (a = alphas_cumprod[t]),
  E[x0 | x_t] = mu + sqrt(a) s^2 / (a s^2 + 1 - a) (x_t - sqrt(a) mu),
and eps, v follow from x_t = sqrt(a) x0 + sqrt(1 - a) eps, v = sqrt(a) eps - sqrt(1 - a) x0.
At a float timestep (diffusers' fractional Euler/Heun lists) the models read the level
a = 1 / (1 + sigma(t)^2), sigma interpolated linearly in t between the table's
sqrt((1 - a) / a) (zero terminal SNR as 2**-24, as diffusers); an integer t reads a[t].

The reference samplers are written from the papers (not from jaxdiff) in float64 numpy:
DDPM (Ho et al. 2020, eqs. 6-7, posterior on the timestep subsequence), DDIM (Song et al. 2021,
eq. 12), DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2, first-order first and last steps as in
diffusers), Euler and Heun (Karras et al. 2022, Algorithms 1-2, on the discrete sigmas as in
diffusers' EulerDiscreteScheduler / HeunDiscreteScheduler).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

ZERO_SNR = 2.0 ** -24


# ----------------------------------------------------------------------------- JAX models
def _level_jax(abar, t):
    if jnp.issubdtype(t.dtype, jnp.integer):
        return abar[t]
    ac = jnp.where(abar == 0, ZERO_SNR, abar)
    sigma = jnp.interp(t, jnp.arange(ac.shape[0], dtype=t.dtype), jnp.sqrt((1 - ac) / ac))
    return 1.0 / (1.0 + sigma ** 2)


def _x0_jax(params, x, t):
    a = _level_jax(params["abar"], t).reshape(-1, 1, 1, 1)
    mu, s2 = params["mu"], params["s"] ** 2
    return mu + jnp.sqrt(a) * s2 / (a * s2 + 1.0 - a) * (x - jnp.sqrt(a) * mu), a


def eps_model(params, x, t):
    x0, a = _x0_jax(params, x, t)
    return (x - jnp.sqrt(a) * x0) / jnp.sqrt(1.0 - a)


def x0_model(params, x, t):
    return _x0_jax(params, x, t)[0]


def v_model(params, x, t):
    x0, a = _x0_jax(params, x, t)
    eps = (x - jnp.sqrt(a) * x0) / jnp.sqrt(1.0 - a)
    return jnp.sqrt(a) * eps - jnp.sqrt(1.0 - a) * x0


JAX_MODELS = {"epsilon": eps_model, "sample": x0_model, "v_prediction": v_model}


def jax_model(prediction_type, abar, mu, s):
    """Partial(model, params): the exact Gaussian denoiser as a model of `prediction_type`."""
    params = {"abar": jnp.asarray(abar, jnp.float32), "mu": jnp.asarray(mu, jnp.float32),
              "s": jnp.asarray(s, jnp.float32)}
    return jax.tree_util.Partial(JAX_MODELS[prediction_type], params)


# ----------------------------------------------------------------------------- numpy float64
def sigma_np(abar, t) -> float:
    """Karras sigma at timestep t (0 for t < 0), interpolated linearly for a float t."""
    if t < 0:
        return 0.0
    ac = np.where(abar == 0, ZERO_SNR, np.asarray(abar, np.float64))
    table = np.sqrt((1 - ac) / ac)
    if isinstance(t, (float, np.floating)):
        return float(np.interp(t, np.arange(len(table)), table))
    return float(table[t])


def level_np(abar, t) -> float:
    """The alphas_cumprod the Gaussian models read at timestep t (see the module docstring)."""
    if isinstance(t, (float, np.floating)):
        return 1.0 / (1.0 + sigma_np(abar, t) ** 2)
    return float(np.float64(abar[t]))


def x0_np(abar_t, x, mu, s):
    a = np.float64(abar_t)
    return mu + np.sqrt(a) * s ** 2 / (a * s ** 2 + 1.0 - a) * (x - np.sqrt(a) * mu)


def output_np(prediction_type, abar_t, x, mu, s):
    a = np.float64(abar_t)
    x0 = x0_np(a, x, mu, s)
    eps = (x - np.sqrt(a) * x0) / np.sqrt(1.0 - a)
    return {"epsilon": eps, "sample": x0, "v_prediction": np.sqrt(a) * eps - np.sqrt(1 - a) * x0}[
        prediction_type]


def to_x0_eps_np(prediction_type, a, x, out):
    """(x0, eps) from a model output (DDPM eq. 4 solved for x0; Salimans & Ho 2022 for v)."""
    if prediction_type == "epsilon":
        return (x - np.sqrt(1 - a) * out) / np.sqrt(a), out
    if prediction_type == "sample":
        return out, (x - np.sqrt(a) * out) / np.sqrt(1 - a)
    return np.sqrt(a) * x - np.sqrt(1 - a) * out, np.sqrt(a) * out + np.sqrt(1 - a) * x


def threshold_np(x0, ratio, max_value):
    """Imagen dynamic thresholding per image."""
    flat = np.abs(x0.reshape(x0.shape[0], -1))
    s = np.clip(np.quantile(flat, ratio, axis=1), 1.0, max_value).reshape(-1, 1, 1, 1)
    return np.clip(x0, -s, s) / s


def reference(method, model_np, abar, ts, x_T, *, prediction_type="epsilon", noise=None, eta=0.0,
              variance_type="fixed_small", leading=False, clip=None, thresh=None,
              ddim_target="t - T // n", final_alpha=1.0):
    """Runs `method` in float64; returns (x_final, x_t list (VP scale), pred_x0 list).

    model_np(x_vp, t) -> model output (float64) in `prediction_type`. abar: alphas_cumprod
    table. ts: the visited timesteps (floats are fractional timesteps with interpolated sigma).
    clip: clip bound for x0 or None. thresh: (ratio, max_value) or None. ddim_target: where a
    DDIM step from t goes, "t - T // n" (DDIM paper's uniform stride, diffusers) or "next"
    (the next listed timestep); a target below 0 has alphas_cumprod `final_alpha`.
    """
    abar = np.asarray(abar, np.float64)
    x = np.asarray(x_T, np.float64)
    n = len(ts)
    noise = np.zeros((n,) + x.shape) if noise is None else np.asarray(noise, np.float64)

    def ab(t, final=1.0):
        return final if t < 0 else abar[t]

    def den(xv, t, a):
        x0, eps = to_x0_eps_np(prediction_type, a, xv, model_np(xv, t))
        if thresh is not None:
            x0 = threshold_np(x0, *thresh)
        elif clip is not None:
            x0 = np.clip(x0, -clip, clip)
        return x0, eps

    nxt = list(ts[1:]) + [-1]
    if method == "ddim" and ddim_target == "t - T // n":
        nxt = [t - len(abar) // n for t in ts]
    xs, x0s = [], []
    if method in ("ddpm", "ddim"):
        for k, (t, s) in enumerate(zip(ts, nxt)):
            a_t, a_s = ab(t), ab(s, final_alpha if method == "ddim" else 1.0)
            x0, eps = den(x, t, a_t)
            xs.append(x), x0s.append(x0)
            if method == "ddpm":
                beta = 1 - a_t / a_s  # one step of the subsequence
                mean = (np.sqrt(a_s) * beta * x0 + np.sqrt(1 - beta) * (1 - a_s) * x) / (1 - a_t)
                var = (1 - a_s) / (1 - a_t) * beta if variance_type == "fixed_small" else beta
                x = mean + (np.sqrt(var) * noise[k] if t > 0 else 0.0)
            else:
                sig = eta * np.sqrt((1 - a_s) / (1 - a_t) * (1 - a_t / a_s))
                x = np.sqrt(a_s) * x0 + np.sqrt(1 - a_s - sig ** 2) * eps + sig * noise[k]
        return x, xs, x0s

    # sigma-space methods: zero terminal SNR uses abar = 2**-24, as diffusers
    sigma = [sigma_np(abar, t) for t in ts] + [0.0]

    def den_sigma(xe, k):  # D(x; sigma_k) with the model on x / sqrt(sigma^2 + 1)
        xv = xe / np.sqrt(sigma[k] ** 2 + 1)
        return xv, den(xv, ts[k], 1 / (sigma[k] ** 2 + 1))[0]

    if method == "dpmpp_2m":
        alpha = [1 / np.sqrt(sg ** 2 + 1) for sg in sigma]
        sig_vp = [sg * al for sg, al in zip(sigma, alpha)]
        with np.errstate(divide="ignore"):
            lam = [np.log(al) - np.log(sv) for al, sv in zip(alpha, sig_vp)]
        prev = None
        for k in range(n):
            x0 = den(x, ts[k], 1 / (sigma[k] ** 2 + 1))[0]
            xs.append(x), x0s.append(x0)
            if k == n - 1:  # to sigma = 0: alpha = 1, e^{-h} = 0, x = D
                x = x0
            else:
                h = lam[k + 1] - lam[k]
                d = x0
                if k > 0:
                    r = (lam[k] - lam[k - 1]) / h
                    d = (1 + 1 / (2 * r)) * x0 - 1 / (2 * r) * prev
                x = sig_vp[k + 1] / sig_vp[k] * x - alpha[k + 1] * (np.exp(-h) - 1) * d
            prev = x0
        return x, xs, x0s

    x = x * (np.sqrt(sigma[0] ** 2 + 1) if leading else sigma[0])
    for k in range(n):
        xv, x0 = den_sigma(x, k)
        xs.append(xv), x0s.append(x0)
        d = (x - x0) / sigma[k]
        x_new = x + (sigma[k + 1] - sigma[k]) * d
        if method == "heun" and sigma[k + 1] > 0:
            d2 = (x_new - den_sigma(x_new, k + 1)[1]) / sigma[k + 1]
            x_new = x + (sigma[k + 1] - sigma[k]) * (d + d2) / 2
        x = x_new
    return x, xs, x0s


def eps_model_labeled(params, x, t, labels):
    """The class-conditional epsilon model: class c has mean params["mu"][c] (H, W, C)."""
    return eps_model({**params, "mu": params["mu"][labels]}, x, t)
