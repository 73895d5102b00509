"""The denoising objective: per-example squared error to the target of the prediction type.

Losses return per-example values of shape (batch,); the caller weights and reduces them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxdiff import diffusion, flow
from jaxdiff.schedules import NoiseSchedule
from jaxdiff.validation import check_choice, check_same_shape

WEIGHTINGS = ("uniform", "min_snr")
# diffusion.objective: "diffusion" (DDPM forward process, target by prediction_type) or "flow"
# (flow matching: x_u = (1 - u) x0 + u noise, target noise - x0; jaxdiff.flow)
OBJECTIVES = ("diffusion", "flow")


def check_objective(objective: str) -> str:
    return check_choice("diffusion.objective", objective, OBJECTIVES)


def per_example_mse(prediction, target):
    """Mean over all non-batch axes of (prediction - target)^2; shape (batch,)."""
    check_same_shape(prediction, target, "model output", "target")
    return jnp.mean(jnp.square(prediction - target).reshape(prediction.shape[0], -1), axis=-1)


def loss_weight(schedule: NoiseSchedule, t, prediction_type: str, weighting: str = "uniform",
                min_snr_gamma: float = 5.0):
    """Per-example weights of shape (batch,).

    "min_snr" is Hang et al. 2023 (eq. 8-9): the x0-loss weight min(SNR, gamma), expressed for
    the chosen parameterisation: / SNR for epsilon, / (SNR + 1) for v, as is for sample. Every
    weight is finite at every t, also where SNR = 0 (t = T-1 of a zero-terminal-SNR schedule).
    """
    check_choice("loss weighting", weighting, WEIGHTINGS)
    if weighting == "uniform":
        return jnp.ones(t.shape, jnp.float32)
    s = diffusion.snr(schedule, t)
    if prediction_type == "epsilon":
        # min(SNR, gamma) / SNR written as min(1, gamma / SNR): 1 in the limit SNR -> 0 instead of
        # 0 / 0 (gamma / 0 is inf, and min(1, inf) = 1).
        return jnp.minimum(1.0, min_snr_gamma / s)
    clipped = jnp.minimum(s, min_snr_gamma)
    if prediction_type == "v_prediction":
        return clipped / (s + 1.0)
    return clipped


def diffusion_loss(schedule: NoiseSchedule, model_output, x0, t, noise, prediction_type: str,
                   weighting: str = "uniform", min_snr_gamma: float = 5.0):
    """Weighted per-example MSE between model_output and the prediction-type target; (batch,)."""
    target = diffusion.target(schedule, x0, t, noise, prediction_type)
    return loss_weight(schedule, t, prediction_type, weighting, min_snr_gamma) * per_example_mse(
        model_output, target)


def drop_labels(key: jax.Array, labels, drop_prob, null_label: int):
    """Replaces each label by `null_label` with probability `drop_prob` (classifier-free guidance
    training, Ho & Salimans 2022)."""
    drop = jax.random.bernoulli(key, drop_prob, labels.shape)
    return jnp.where(drop, jnp.asarray(null_label, labels.dtype), labels)


def flow_matching_loss(model_output, x0, noise):
    """Per-example MSE between the predicted velocity and noise - x0 (flow matching); (batch,)."""
    return per_example_mse(model_output, flow.velocity_target(x0, noise))
