"""Few-step students distilled from a trained run by reflow on the teacher's own coupling.

The teacher (any unconditional pixel run, diffusion or flow objective) integrates its
deterministic ODE from noise x_T to an image x0* in many steps (DDIM 50 by default, or its flow
sampler). That fixes a pairing of noise and images. For each pair the straight path through both
is the noisy image x_t = alpha_t x0* + sigma_t eps* (a diffusion run, with eps* chosen so that
the first visited timestep holds x_T itself) or x_u = (1 - u) x0* + u x_T (a flow run). A model
that predicts the pair's target everywhere on that path makes every deterministic step land on
the path again, so its DDIM (or flow Euler) run from x_T gives x0* in ANY number of steps
(Liu et al. 2023, rectified flow "reflow"; written for VP models the way Salimans & Ho 2022
write their distillation targets). The student is trained with the ordinary train step on batches
that carry the pairs ("image" x0*, "noise" eps*) and times drawn from those its few-step
sampler visits; it starts from the teacher's EMA weights. A diffusion student predicts v: an
eps-predicting model's x0 at t = 999 is (x - sigma eps) / alpha with alpha = 0.006, which
magnifies any error of eps 150 times (Salimans & Ho 2022 sec. 4).

The student's folder is an ordinary run: config.json (the teacher's preset and model, its own
sampling method and step count) and a checkpoint.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff import checkpoint as ckpt_lib
from jaxdiff import training
from jaxdiff.validation import InputError


def student_config(teacher_config, steps: int, train_steps: int):
    """The student's config: the teacher's, sampled with `steps` deterministic steps
    (DDIM trailing for diffusion runs, predicting v; flow Euler for flow runs)."""
    config = teacher_config.copy_and_resolve_references()
    config.sampling.num_steps = int(steps)
    config.train.num_steps = int(train_steps)
    config.optim.warmup_steps = min(int(config.optim.warmup_steps), max(1, train_steps // 10))
    if config.diffusion.objective == "flow":
        config.sampling.method = "flow_euler"
    else:
        config.diffusion.prediction_type = "v_prediction"
        config.diffusion.loss_weighting = "uniform"
        config.sampling.method = "ddim"
        config.sampling.spacing = "trailing"
        config.sampling.eta = 0.0
    return config


def visited_times(config, max_steps: int) -> np.ndarray:
    """The model times the student's sampler visits with 1..max_steps steps (sorted, unique):
    int32 timesteps for diffusion runs, u in (0, 1] (float32) for flow runs."""
    if config.diffusion.objective == "flow":
        from jaxdiff.sampling.flow import flow_sigmas

        return np.unique(np.concatenate([flow_sigmas(k, config.sampling.flow_shift)[0][:-1]
                                         for k in range(1, max_steps + 1)]))
    from jaxdiff.sampling import timesteps

    T = int(config.diffusion.num_timesteps)
    return np.unique(np.concatenate([timesteps(T, k, "trailing", method="ddim")
                                     for k in range(1, max_steps + 1)])).astype(np.int32)


def pair_noise(config, num: int, seed: int = 0) -> np.ndarray:
    """The x_T (num, H, W, C) float32 from which `teacher_pairs` runs the teacher."""
    shape = (num, config.model.image_size, config.model.image_size, config.model.in_channels)
    return np.asarray(jax.random.normal(jax.random.key(seed), shape), np.float32)


def teacher_pairs(config, graphdef, params, num: int, *, teacher_steps: int = 50, seed: int = 0,
                  batch_size: int = 256, verbose: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(x0*, eps*), float32 (num, H, W, C): the teacher's images from noise and the noise that
    puts each pair on one straight path (see the module docstring)."""
    from jaxdiff.generate import generate_images

    flow_run = config.diffusion.objective == "flow"
    # the teacher's deterministic sampler: its own flow sampler, or DDIM (eta 0) trailing
    method = config.sampling.method if flow_run else "ddim"
    x_T = pair_noise(config, num, seed)
    start = time.perf_counter()
    x0 = generate_images(config, graphdef, params, num=num, method=method,
                         num_steps=teacher_steps, eta=0.0, spacing="trailing",
                         batch_size=batch_size, latents=x_T, progress=verbose)
    x0 = np.clip(x0, -1.0, 1.0).astype(np.float32)
    if verbose:
        print(f"teacher: {num} images in {time.perf_counter() - start:.0f} s "
              f"({method}, {teacher_steps} steps)", file=sys.stderr)
    if flow_run:
        return x0, x_T
    abar = float(training.schedule_from_config(config).alphas_cumprod[-1])  # t = T-1, trailing
    eps = (x_T.astype(np.float64) - np.sqrt(abar) * x0) / np.sqrt(1.0 - abar)
    return x0, eps.astype(np.float32)


def distill(teacher_workdir, out, *, steps: int = 4, num_pairs: int = 8192,
            teacher_steps: int = 50, train_steps: int = 1500, batch_size: int | None = None,
            seed: int = 0, verbose: bool = False) -> Path:
    """Distills the run in `teacher_workdir` into a `steps`-step student run written to `out`.

    Returns the student's workdir. Raises InputError for a conditional or non-pixel teacher, bad
    numbers, or an `out` that already holds checkpoints (nothing is overwritten).
    """
    from jaxdiff.generate import load_run
    from jaxdiff.trainer import saved_steps

    for name, value, low in (("steps", steps, 1), ("num_pairs", num_pairs, 1),
                             ("teacher_steps", teacher_steps, 1), ("train_steps", train_steps, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise InputError(f"distill {name} must be an integer >= {low}; got {value!r}")
    out = Path(out)
    if Path(teacher_workdir).resolve() == out.resolve():
        raise InputError(f"the student's folder must differ from the teacher's: {str(out)!r}")
    if out.exists() and saved_steps(out):
        raise InputError(f"{str(out)!r} already holds a run (checkpoints {saved_steps(out)}); "
                         f"choose a new --out folder")
    teacher, graphdef, params, teacher_step = load_run(teacher_workdir)
    if teacher.task != "pixel_diffusion" or int(teacher.model.num_classes) != 0:
        raise InputError("distill takes an unconditional pixel run (presets digits, digits_flow, "
                         f"cifar10, celeba64); {str(teacher_workdir)!r} is a {teacher.task} run "
                         f"with model.num_classes={teacher.model.num_classes}")
    config = student_config(teacher, steps, train_steps)
    if batch_size is not None:
        config.train.batch_size = int(batch_size)
    x0, eps = teacher_pairs(teacher, graphdef, params, num_pairs, teacher_steps=teacher_steps,
                            seed=seed, verbose=verbose)
    times = jnp.asarray(visited_times(config, steps))
    flow_run = config.diffusion.objective == "flow"

    _, optimizer, state = training.init_train_state(config, jax.random.key(seed + 1))
    state = state.replace(params=params, ema_params=jax.tree.map(jnp.copy, params),
                          opt_state=optimizer.init(params))
    step_fn = jax.jit(training.make_train_step(graphdef, training.schedule_from_config(config),
                                               optimizer, config), donate_argnums=0)
    pairs_x0, pairs_eps = jnp.asarray(x0), jnp.asarray(eps)
    bs = int(config.train.batch_size)

    @jax.jit
    def make_batch(key):
        index_key, time_key = jax.random.split(key)
        idx = jax.random.randint(index_key, (bs,), 0, pairs_x0.shape[0])
        t = jax.random.choice(time_key, times, (bs,))
        return {"image": pairs_x0[idx], "noise": pairs_eps[idx], ("u" if flow_run else "t"): t}

    start, batch_key = time.perf_counter(), jax.random.key(seed + 2)
    for i in range(train_steps):
        state, metrics = step_fn(state, make_batch(jax.random.fold_in(batch_key, i)))
        if verbose and ((i + 1) % 100 == 0 or i + 1 == train_steps):
            print(f"student step {i + 1}/{train_steps} loss {float(metrics['loss']):.5f} "
                  f"({time.perf_counter() - start:.0f} s)", file=sys.stderr)
    ckpt_lib.save_config(out, config)
    with ckpt_lib.Checkpointer(out) as checkpointer:
        checkpointer.save(train_steps, state, {
            "step": train_steps, "data_iterator": {}, "config": config.to_dict(),
            "distilled_from": {"workdir": str(teacher_workdir), "step": teacher_step,
                               "teacher_steps": teacher_steps, "num_pairs": num_pairs}})
        checkpointer.wait()
    return out
