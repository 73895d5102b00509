"""The training run: config -> data -> state -> jitted step -> loop with logging and checkpoints.

`train(config, workdir)` starts a new run or continues the one in `workdir` from its latest
checkpoint, exactly: params, optimizer state, EMA, step, PRNG key and the data iterator position
are all restored, so an interrupted-and-resumed run equals an uninterrupted one.
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff import checkpoint as ckpt_lib
from jaxdiff import parallel, training
from jaxdiff.progress import MetricsLog, Progress
from jaxdiff.validate_config import validate_config
from jaxdiff.validation import InputError, InputTypeError, check_int


class TrainingStopped(RuntimeError):
    """The run stopped early for a reason the user must see (non-finite steps, a signal).

    exit_code: what the CLI exits with (128 + signal number for a signal, 3 otherwise).
    """

    def __init__(self, message: str, exit_code: int = 3):
        super().__init__(message)
        self.exit_code = exit_code


class _StopRequest:
    """Turns SIGINT/SIGTERM into a flag the loop checks between steps."""

    def __init__(self):
        self.signal_name = None
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. a notebook worker): no handler
                pass
        return self

    def _handle(self, signum, frame):
        if self.signal_name is not None:  # second signal: give up immediately
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False


def check_resume_compatible(workdir: Path, config) -> None:
    """Refuses to continue a run whose saved config differs in a key that matters.

    Raises InputError listing each differing key with its saved and requested values; the keys
    in `checkpoint.HARMLESS_KEYS` (total steps, logging, checkpointing, sampling) may change.
    """
    workdir = Path(workdir)
    if not (workdir / ckpt_lib.CONFIG_FILE).exists():
        return
    saved = ckpt_lib.load_config(workdir)
    diffs = ckpt_lib.config_differences(saved, config)
    if diffs:
        lines = "; ".join(f"{k}: saved {a!r}, requested {b!r}" for k, a, b in
                          ((k, *v) for k, v in diffs.items()))
        raise InputError(
            f"workdir {str(workdir)!r} holds a run with a different config ({lines}). Use a new "
            f"--workdir, or drop these overrides to continue that run. Only "
            f"{', '.join(ckpt_lib.HARMLESS_KEYS)} may change on resume.")


def saved_steps(workdir) -> list[int]:
    """Steps with a committed checkpoint folder in `<workdir>/checkpoints` (a cheap listing
    used for early checks, before orbax is opened; partial saves have other names)."""
    directory = Path(workdir) / "checkpoints"
    if not directory.is_dir():
        return []
    return sorted(int(p.name) for p in directory.iterdir() if p.is_dir() and p.name.isdigit())


def _check_reliability_keys(config) -> tuple[int, frozenset, float]:
    """(max_consecutive_nonfinite, debug_nan_steps, debug_step_sleep), checked."""
    t = config.train
    max_nonfinite = check_int(t.get("max_consecutive_nonfinite", 20),
                              "train.max_consecutive_nonfinite", 1)
    nan_steps = t.get("debug_nan_steps", ())
    if isinstance(nan_steps, (int, np.integer)) and not isinstance(nan_steps, bool):
        nan_steps = (nan_steps,)
    if not isinstance(nan_steps, (tuple, list)):
        raise InputTypeError(f"train.debug_nan_steps must be a tuple of step numbers >= 1 (e.g. "
                             f"--config.train.debug_nan_steps=5,6); got {nan_steps!r}")
    nan_steps = frozenset(check_int(s, "train.debug_nan_steps entry", 1) for s in nan_steps)
    sleep = t.get("debug_step_sleep", 0.0)
    if isinstance(sleep, bool) or not isinstance(sleep, (int, float)) or not 0 <= sleep <= 60:
        raise InputError(f"train.debug_step_sleep must be a number of seconds in [0, 60]; "
                         f"got {sleep!r}")
    return max_nonfinite, nan_steps, float(sleep)


@jax.jit
def _all_finite(tree) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
              if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def _host_batch(batch: dict) -> dict:
    return {"image": np.asarray(batch["image"], np.float32),
            "label": np.asarray(batch["label"], np.int32)}


def train(config, workdir, *, restore_step: int | None = None, write_samples: bool = True,
          verbose: bool = True):
    """Trains (or continues training) the model described by `config` in `workdir`.

    Returns the final TrainState. Writes `<workdir>/checkpoints/<step>/`, `config.json`,
    `metrics.jsonl` and, at the end, `samples.png` (EMA parameters, config.sampling).
    """
    from jaxdiff.data import dataset_info, input_pipeline

    workdir = Path(workdir)
    validate_config(config)
    max_nonfinite, nan_steps, step_sleep = _check_reliability_keys(config)
    info = dataset_info(config.data)
    _check_data_matches_model(info, config)
    existing = saved_steps(workdir)
    if restore_step is not None:
        check_int(restore_step, "restore_step", 0)
        if restore_step not in existing:
            raise InputError(f"--restore_step {restore_step}: there is no checkpoint at that step "
                             f"in {str(workdir / 'checkpoints')!r}; available steps: {existing}")
    if existing:  # a fresh run (or one killed before its first save) may change anything
        check_resume_compatible(workdir, config)
    num_steps = int(config.train.num_steps)

    mesh = parallel.make_mesh(config.mesh)
    graphdef, optimizer, state, state_shardings = training.init_sharded_train_state(config, mesh)
    data_sharding = parallel.batch_sharding(mesh)
    checkpointer = ckpt_lib.Checkpointer(workdir, max_to_keep=config.checkpoint.max_to_keep)
    iterator = input_pipeline(config.data, split="train",
                              batch_size=config.train.batch_size // jax.process_count(),
                              seed=config.train.seed)
    metrics_log = MetricsLog(workdir, enabled=jax.process_index() == 0)
    latest = checkpointer.latest_step() if restore_step is None else restore_step
    if latest is not None:
        # A corrupt checkpoint raises CheckpointError here: never a silent fall-back to another.
        state, meta = checkpointer.restore(ckpt_lib.abstract_like(state), latest)
        if int(state.step) != latest:
            raise ckpt_lib.CheckpointError(
                f"checkpoint at step {latest} in {str(checkpointer.directory)!r} holds a state "
                f"at step {int(state.step)}; it was not written by this trainer. Nothing was "
                f"deleted.")
        iterator.set_state(meta["data_iterator"])
        moved = checkpointer.supersede_after(latest)
        if moved and verbose:
            print(f"continuing from step {latest}: moved the later checkpoints to "
                  f"{[str(p) for p in moved]} (nothing was deleted)", file=sys.stderr)
        metrics_log.truncate_after(latest)
        if verbose:
            print(f"resuming from step {latest} in {workdir}", file=sys.stderr)
    else:
        workdir.mkdir(parents=True, exist_ok=True)
        metrics_log.truncate_after(0)  # records of a run killed before its first checkpoint
    ckpt_lib.save_config(workdir, config)

    schedule = training.schedule_from_config(config)
    step_fn = training.jit_train_step(
        training.make_train_step(graphdef, schedule, optimizer, config),
        state_shardings, data_sharding)
    start = int(state.step)
    log_every = max(1, int(config.train.log_every))
    every = max(1, int(config.checkpoint.every_steps))
    sample_every = int(config.train.get("sample_every", 0))  # TensorBoard sample grids
    progress = Progress(num_steps, start, enabled=verbose and jax.process_index() == 0)

    def meta_for(step):
        return {"step": step, "data_iterator": iterator.get_state(),
                "config": config.to_dict()}

    previous_metrics = None
    stop_reason = None
    started = time.perf_counter()
    with _StopRequest() as stop:
        for step in range(start, num_steps):
            done = step + 1
            host_batch = _host_batch(next(iterator))
            if done in nan_steps:  # debugging hook: train.debug_nan_steps
                host_batch["image"] = np.full_like(host_batch["image"], np.nan)
            batch = parallel.global_batch(host_batch, data_sharding)
            state, metrics = step_fn(state, batch)
            if step_sleep:  # debugging hook: train.debug_step_sleep
                jax.block_until_ready(metrics)
                time.sleep(step_sleep)
            if step == start:  # one sync so that the rate and ETA exclude compilation
                jax.block_until_ready(metrics)
                if verbose and jax.process_index() == 0:
                    print(f"compiled and ran the first step in "
                          f"{time.perf_counter() - started:.1f}s", file=sys.stderr)
                progress.restart(done)
            # Read the previous step's counter: that step has finished, so this does not stall.
            if previous_metrics is not None and \
                    int(previous_metrics["nonfinite_consecutive"]) >= max_nonfinite:
                stop_reason = "nonfinite"
                break
            previous_metrics = metrics
            if done % log_every == 0 or done == num_steps:
                host = {k: v.item() for k, v in jax.device_get(metrics).items()}
                rate = progress.update(done, {"loss": host["loss"],
                                              "skipped": host["nonfinite_total"]})
                metrics_log.write(done, {**host, "steps_per_sec": rate})
            if sample_every and done % sample_every == 0 and done != num_steps \
                    and jax.process_count() == 1:
                metrics_log.write_image(done, "samples", sample_grid(
                    config, graphdef, state.ema_params, min(16, config.sampling.num_samples)))
            if done % every == 0 or done == num_steps or stop.signal_name:
                if int(metrics["nonfinite_consecutive"]) >= max_nonfinite:
                    stop_reason = "nonfinite"
                    break
                if not bool(_all_finite((state.params, state.ema_params))):
                    stop_reason = "nonfinite_params"
                    break
                checkpointer.save(done, state, meta_for(done))
            if stop.signal_name:
                stop_reason = "signal"
                break
    progress.close()
    checkpointer.close()
    kept = checkpointer.all_steps()
    if stop_reason == "signal":
        raise TrainingStopped(f"received {stop.signal_name}: saved a checkpoint at step "
                              f"{int(state.step)} in {workdir}; run the same command to continue",
                              exit_code=128 + int(getattr(signal, stop.signal_name)))
    if stop_reason == "nonfinite":
        raise TrainingStopped(
            f"stopped: {max_nonfinite} training steps in a row had a non-finite loss or gradient "
            f"(they were skipped, parameters were not updated). The last good checkpoint is "
            f"kept: steps {kept} in {workdir}. Lower optim.learning_rate or "
            f"check the data for NaNs.")
    if stop_reason == "nonfinite_params":
        raise TrainingStopped(
            f"stopped at step {int(state.step)}: the parameters hold NaN or infinite values, so "
            f"no checkpoint was written; the earlier checkpoints are kept: steps {kept} in "
            f"{workdir}. Lower optim.learning_rate or check the data.")
    if write_samples:
        from jax.experimental import multihost_utils

        from jaxdiff.viz import save_png

        # Every process takes part in the gather; process 0 samples on its own devices.
        ema_params = multihost_utils.process_allgather(state.ema_params, tiled=True) \
            if jax.process_count() > 1 else state.ema_params
        if jax.process_index() == 0:
            grid = sample_grid(config, graphdef, ema_params, config.sampling.num_samples)
            save_png(grid, workdir / "samples.png")
            metrics_log.write_image(int(state.step), "samples", grid)
            if verbose:
                print(f"wrote {workdir / 'samples.png'}", file=sys.stderr)
    return state


def sample_grid(config, graphdef, params, num: int):
    """A uint8 grid of `num` samples with `params` (labels captioned for conditional models)."""
    from jaxdiff.generate import generate_images
    from jaxdiff.viz import image_grid

    images = generate_images(config, graphdef, params, num=num, seed=config.train.seed)
    num_classes = int(config.model.get("num_classes", 0))
    labels = np.arange(num) % num_classes if num_classes else None
    return image_grid(np.clip(images, -1, 1), labels=labels)


def _check_data_matches_model(info, config) -> None:
    # The pipeline resizes to data.image_size and converts to data.channels.
    if config.data.channels != config.model.in_channels:
        raise InputError(f"data.channels={config.data.channels} but the model expects "
                         f"model.in_channels={config.model.in_channels}; make them equal")
    if config.data.image_size != config.model.image_size:
        raise InputError(f"data.image_size={config.data.image_size} but "
                         f"model.image_size={config.model.image_size}; make them equal")
    num_classes = int(config.model.get("num_classes", 0))
    if num_classes and info.num_classes and num_classes != info.num_classes:
        raise InputError(f"model.num_classes={num_classes} but dataset {config.data.name!r} has "
                         f"{info.num_classes} classes")
    if num_classes and not info.num_classes:
        raise InputError(f"model.num_classes={num_classes} asks for a class-conditional model but "
                         f"dataset {config.data.name!r} has no labels")
