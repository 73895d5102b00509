"""Checks a whole config before anything is built, compiled or written."""

from __future__ import annotations

from jaxdiff.validation import InputError, check_choice, check_int


def validate_config(config) -> None:
    """Raises InputError naming the key, the value and what is accepted."""
    from jaxdiff.diffusion import PREDICTION_TYPES
    from jaxdiff.losses import WEIGHTINGS
    from jaxdiff.schedules import SCHEDULES

    d = config.diffusion
    check_choice("diffusion.schedule", d.schedule, SCHEDULES)
    check_choice("diffusion.prediction_type", d.prediction_type, PREDICTION_TYPES)
    check_choice("diffusion.loss_weighting", d.loss_weighting, WEIGHTINGS)
    check_int(d.num_timesteps, "diffusion.num_timesteps", 2)
    if not float(d.min_snr_gamma) > 0:
        raise InputError(f"diffusion.min_snr_gamma must be > 0 (the SNR at which min-SNR "
                         f"weighting clips); got {d.min_snr_gamma!r}")
    if d.rescale_zero_terminal_snr and d.prediction_type == "epsilon":
        # At t = T-1 the image is pure noise (sqrt(abar) = 0), so x0 = (x_t - sqrt(1 - abar) eps)
        # / sqrt(abar) cannot be recovered from a noise prediction: sampling would divide by 0.
        raise InputError("diffusion.rescale_zero_terminal_snr=True needs "
                         "diffusion.prediction_type 'v_prediction' or 'sample'; got 'epsilon', "
                         "whose last sampling step divides by sqrt(alphas_cumprod[T-1]) = 0 "
                         "(Lin et al. 2024, sec. 3.2)")
    if not 0.0 <= float(d.label_dropout) <= 1.0:
        raise InputError(f"diffusion.label_dropout must be in [0, 1]; got {d.label_dropout!r}")

    t = config.train
    check_int(t.num_steps, "train.num_steps")
    check_int(t.batch_size, "train.batch_size")
    check_int(t.log_every, "train.log_every")
    check_int(t.sample_every, "train.sample_every", 0)
    if not 0.0 <= float(t.ema_decay) < 1.0:
        raise InputError(f"train.ema_decay must be in [0, 1); got {t.ema_decay!r}")
    check_int(config.checkpoint.every_steps, "checkpoint.every_steps")
    check_int(config.checkpoint.max_to_keep, "checkpoint.max_to_keep")
    check_int(config.optim.accumulation_steps, "optim.accumulation_steps")
    if not float(config.optim.learning_rate) > 0:
        raise InputError(f"optim.learning_rate must be > 0; got {config.optim.learning_rate!r}")

    s = config.sampling
    from jaxdiff.generate import check_method_fits_objective
    from jaxdiff.losses import check_objective
    from jaxdiff.sampling import SAMPLERS
    from jaxdiff.sampling.flow import FLOW_METHODS

    check_choice("sampling.method", s.method, (*SAMPLERS, *FLOW_METHODS))
    check_method_fits_objective(s.method, check_objective(d.objective))
    if d.objective == "flow":
        from jaxdiff.flow import check_time_sampling

        check_time_sampling(d.flow_time_sampling, d.flow_logit_std, d.flow_shift)
    if not float(s.flow_shift) > 0:
        raise InputError(f"sampling.flow_shift must be > 0; got {s.flow_shift!r}")
    check_int(s.num_steps, "sampling.num_steps")
    if s.num_steps > d.num_timesteps:
        raise InputError(f"sampling.num_steps must be in [1, diffusion.num_timesteps="
                         f"{d.num_timesteps}]; got {s.num_steps}")
    check_int(s.num_samples, "sampling.num_samples")

    from jaxdiff.parallel import check_global_batch, mesh_shape

    data, fsdp = mesh_shape(config.mesh)
    check_global_batch(t.batch_size, data * fsdp)
