"""Training: the explicit `TrainState`, the optimizer built from the config, and a pure train step.

`train_step(state, batch) -> (state, metrics)` is a pure function of its arguments: all randomness
comes from `fold_in(state.key, state.step)`, so the same state and batch give the same result and a
run resumed from a checkpoint replays exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

from jaxdiff import flow, losses
from jaxdiff.diffusion import check_prediction_type, q_sample
from jaxdiff.schedules import NoiseSchedule, make_schedule
from jaxdiff.validation import InputError

Batch = dict[str, jax.Array]


@struct.dataclass
class TrainState:
    """Everything that determines the future of a run (besides the data iterator).

    step: int32 scalar, number of train_step calls so far.
    params, ema_params: the model parameter pytree and its exponential moving average.
    opt_state: the optax state (includes the non-finite counters of `optax.apply_if_finite`).
    key: the run's base PRNG key; step s uses `jax.random.fold_in(key, s)`.
    """

    step: jax.Array
    params: Any
    opt_state: Any
    ema_params: Any
    key: jax.Array


def schedule_from_config(config) -> NoiseSchedule:
    d = config.diffusion
    return make_schedule(d.schedule, d.num_timesteps,
                         rescale_to_zero_terminal_snr=d.rescale_zero_terminal_snr)


def learning_rate_schedule(optim_config, num_steps: int) -> optax.Schedule:
    """Linear warmup to the peak rate, then cosine decay to `end_learning_rate_fraction` of it."""
    o = optim_config
    updates = max(1, num_steps // max(1, o.accumulation_steps))
    warmup = min(int(o.warmup_steps), updates - 1) if updates > 1 else 0
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=o.learning_rate, warmup_steps=warmup,
        decay_steps=max(updates, warmup + 1),
        end_value=o.learning_rate * o.end_learning_rate_fraction)


def make_optimizer(optim_config, num_steps: int, frozen=None) -> optax.GradientTransformation:
    """clip_by_global_norm -> AdamW(warmup+cosine), accumulated over `accumulation_steps`
    micro-batches (optax.MultiSteps) and skipped when gradients are not finite
    (optax.apply_if_finite; the train loop stops the run after too many in a row).

    `frozen`: names of top-level parameter groups (keys of the params dict) that are never
    updated: no AdamW moments, no weight decay (which would otherwise shrink them)."""
    o = optim_config
    accumulation = int(o.accumulation_steps)
    if accumulation < 1:
        raise InputError(f"optim.accumulation_steps must be >= 1; got {accumulation}")
    inner = optax.chain(
        optax.clip_by_global_norm(o.grad_clip_norm),
        optax.adamw(learning_rate_schedule(o, num_steps), b1=o.b1, b2=o.b2,
                    weight_decay=o.weight_decay),
    )
    if frozen:
        frozen = frozenset(frozen)

        def group_labels(params):
            return {name: jax.tree.map(lambda _: "frozen" if name in frozen else "train", group)
                    for name, group in params.items()}

        inner = optax.multi_transform({"train": inner, "frozen": optax.set_to_zero()},
                                      group_labels)
    if accumulation > 1:
        inner = optax.MultiSteps(inner, every_k_schedule=accumulation)
    # The run is stopped by the train loop after `train.max_consecutive_nonfinite` skipped steps;
    # apply_if_finite itself must never let a non-finite update through, hence the huge limit.
    return optax.apply_if_finite(inner, max_consecutive_errors=2**30)


def nonfinite_counts(opt_state) -> tuple[jax.Array, jax.Array]:
    """(consecutive, total) counts of skipped non-finite steps held in the optimizer state."""
    return opt_state.notfinite_count, opt_state.total_notfinite


def optimizer_applied_update(old_opt_state, new_opt_state) -> jax.Array:
    """Bool scalar: whether the `optimizer.update` that turned `old_opt_state` into
    `new_opt_state` changed the parameters (`make_optimizer`'s state layout).

    False when the gradients were not finite (apply_if_finite skipped them) and, under gradient
    accumulation, on the micro-batches before the K-th (optax.MultiSteps only accumulates them):
    its `gradient_step` counter moves exactly when an update is applied.
    """
    inner_old, inner_new = old_opt_state.inner_state, new_opt_state.inner_state
    if isinstance(inner_new, optax.MultiStepsState):  # the state's structure, not its values
        return inner_new.gradient_step != inner_old.gradient_step
    return jnp.asarray(new_opt_state.last_finite, jnp.bool_)


def create_train_state(params, optimizer: optax.GradientTransformation, key: jax.Array
                       ) -> TrainState:
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=optimizer.init(params),
                      ema_params=jax.tree.map(jnp.copy, params), key=key)


def init_train_state(config, key: jax.Array | None = None):
    """Builds the model and its TrainState from a config. Returns (graphdef, optimizer, state)."""
    from jaxdiff.models import init_model

    check_prediction_type(config.diffusion.prediction_type)
    if key is None:
        key = jax.random.key(config.train.seed)
    init_key, run_key = jax.random.split(key)
    graphdef, params = init_model(dict(config.model), init_key)
    optimizer = make_optimizer(config.optim, config.train.num_steps)
    return graphdef, optimizer, create_train_state(params, optimizer, run_key)


def init_sharded_train_state(config, mesh, key: jax.Array | None = None, init=None):
    """Like `init_train_state`, but the state is created directly with its shardings on `mesh`
    (each process computes only its own shards, which multi-process runs require). `init`:
    another `(config, key) -> (graphdef, optimizer, state)` (another task's model).

    Returns (graphdef, optimizer, state, state_shardings).
    """
    from jaxdiff.parallel import state_sharding

    if key is None:
        key = jax.random.key(config.train.seed)
    built = {}

    init = init_train_state if init is None else init

    def make_state(key):
        graphdef, optimizer, state = init(config, key)
        built.update(graphdef=graphdef, optimizer=optimizer)  # static, captured while tracing
        return state

    shardings = state_sharding(jax.eval_shape(make_state, key), mesh)
    state = jax.jit(make_state, out_shardings=shardings)(key)
    return built["graphdef"], built["optimizer"], state, shardings


def ema_decay_at(step, decay: float):
    """EMA decay with the usual warm-up min(decay, (1 + step) / (10 + step))."""
    step = step.astype(jnp.float32)
    return jnp.minimum(decay, (1.0 + step) / (10.0 + step))


def make_train_step(graphdef, schedule: NoiseSchedule, optimizer: optax.GradientTransformation,
                    config) -> Callable[[TrainState, Batch], tuple[TrainState, dict]]:
    """Returns the pure (un-jitted) train step for this model, schedule, optimizer and config.

    Jit it with `jax.jit(step, donate_argnums=0)` (see `jit_train_step`).
    """
    from jaxdiff.models import apply_model

    d = config.diffusion
    prediction_type = check_prediction_type(d.prediction_type)
    weighting = d.loss_weighting
    losses.loss_weight(schedule, jnp.zeros((1,), jnp.int32), prediction_type, weighting)  # checks
    num_classes = int(config.model.num_classes)
    label_dropout = float(d.label_dropout)
    num_timesteps = schedule.num_timesteps
    objective = losses.check_objective(d.objective)
    if objective == "flow":
        flow.check_time_sampling(d.flow_time_sampling, d.flow_logit_std, d.flow_shift)

    def loss_fn(params, batch: Batch, key: jax.Array):
        images = batch["image"]
        t_key, noise_key, label_key, dropout_key = jax.random.split(key, 4)
        # A batch may carry its own "t" (or "u") and "noise" (tests, exact replays); else they
        # are drawn.
        noise = batch["noise"] if "noise" in batch else jax.random.normal(
            noise_key, images.shape, images.dtype)
        if objective == "flow":  # the model sees the float timestep 1000 u (as diffusers)
            u = batch["u"] if "u" in batch else flow.sample_u(
                t_key, images.shape[0], d.flow_time_sampling, d.flow_logit_mean,
                d.flow_logit_std, d.flow_shift)
            x_t, t = flow.interpolate(images, u, noise), u * flow.TIMESTEP_SCALE
        else:
            t = batch["t"] if "t" in batch else jax.random.randint(
                t_key, (images.shape[0],), 0, num_timesteps, dtype=jnp.int32)
            x_t = q_sample(schedule, images, t, noise)
        labels = None
        if num_classes > 0:
            labels = losses.drop_labels(label_key, batch["label"].astype(jnp.int32),
                                        label_dropout, num_classes)
        output = apply_model(graphdef, params, x_t, t, labels, train=True,
                             dropout_key=dropout_key)
        if objective == "flow":
            per_example = losses.flow_matching_loss(output, images, noise)
        else:
            per_example = losses.diffusion_loss(schedule, output, images, t, noise,
                                                prediction_type, weighting, d.min_snr_gamma)
        return jnp.mean(per_example), {}

    return make_step_from_loss(loss_fn, optimizer, config)


def make_step_from_loss(loss_fn, optimizer: optax.GradientTransformation, config
                        ) -> Callable[[TrainState, Batch], tuple[TrainState, dict]]:
    """The pure train step around `loss_fn(params, batch, key) -> (loss, metrics dict)`: the
    gradient, the optimizer update (skipped when not finite), the EMA and the step's metrics.
    Every task (pixel diffusion, autoencoder, text to image) trains through this one step."""
    ema_decay = float(config.train.ema_decay)
    lr_schedule = learning_rate_schedule(config.optim, config.train.num_steps)
    accumulation = int(config.optim.accumulation_steps)

    def train_step(state: TrainState, batch: Batch) -> tuple[TrainState, dict]:
        step_key = jax.random.fold_in(state.key, state.step)
        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, batch,
                                                                        step_key)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        # The EMA averages the parameters once per optimizer update, not per micro-batch (its
        # decay would otherwise be decay^K per update) and not on skipped non-finite steps.
        applied = optimizer_applied_update(state.opt_state, opt_state)
        decay = ema_decay_at(state.step // accumulation, ema_decay)
        ema_params = jax.tree.map(
            lambda e, p: jnp.where(applied, decay * e + (1.0 - decay) * p, e),
            state.ema_params, params)
        consecutive, total = nonfinite_counts(opt_state)
        metrics = {
            "loss": loss,
            "grad_norm": optax.tree.norm(grads),
            "learning_rate": lr_schedule(state.step // accumulation),
            "nonfinite_consecutive": consecutive,
            "nonfinite_total": total,
            **aux,
        }
        new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                                  ema_params=ema_params)
        return new_state, metrics

    return train_step


def jit_train_step(train_step, state_sharding=None, batch_sharding=None):
    """`jax.jit` with the state's buffers donated (and explicit shardings when given)."""
    if state_sharding is None:
        return jax.jit(train_step, donate_argnums=0)
    return jax.jit(train_step, donate_argnums=0,
                   in_shardings=(state_sharding, batch_sharding),
                   out_shardings=(state_sharding, None))
