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
import numpy as np

from jaxdiff import checkpoint as ckpt_lib
from jaxdiff import parallel, training
from jaxdiff.progress import MetricsLog, Progress
from jaxdiff.validate_config import validate_config


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
    """Refuses to continue a run whose saved config differs in a key that matters."""
    if not (workdir / ckpt_lib.CONFIG_FILE).exists():
        return
    saved = ckpt_lib.load_config(workdir)
    diffs = ckpt_lib.config_differences(saved, config)
    if diffs:
        lines = "; ".join(f"{k}: saved {a!r}, requested {b!r}" for k, a, b in
                          ((k, *v) for k, v in diffs.items()))
        raise ValueError(
            f"workdir {str(workdir)!r} holds a run with a different config ({lines}). Use a new "
            f"--workdir, or drop these overrides to continue that run. Only "
            f"{', '.join(ckpt_lib.HARMLESS_KEYS)} may change on resume.")


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
    info = dataset_info(config.data)
    _check_data_matches_model(info, config)
    check_resume_compatible(workdir, config)
    num_steps = int(config.train.num_steps)

    mesh = parallel.make_mesh(config.mesh)
    graphdef, optimizer, state = training.init_train_state(config)
    state_shardings = parallel.state_sharding(state, mesh)
    state = jax.device_put(state, state_shardings)
    data_sharding = parallel.batch_sharding(mesh)
    checkpointer = ckpt_lib.Checkpointer(workdir, max_to_keep=config.checkpoint.max_to_keep)
    iterator = input_pipeline(config.data, split="train",
                              batch_size=config.train.batch_size // jax.process_count(),
                              seed=config.train.seed)
    metrics_log = MetricsLog(workdir, enabled=jax.process_index() == 0)
    latest = checkpointer.latest_step() if restore_step is None else restore_step
    if latest is not None:
        state, meta = checkpointer.restore(ckpt_lib.abstract_like(state), latest)
        iterator.set_state(meta["data_iterator"])
        metrics_log.truncate_after(int(state.step))
        if verbose:
            print(f"resuming from step {int(state.step)} in {workdir}", file=sys.stderr)
    else:
        workdir.mkdir(parents=True, exist_ok=True)
    ckpt_lib.save_config(workdir, config)

    schedule = training.schedule_from_config(config)
    step_fn = training.jit_train_step(
        training.make_train_step(graphdef, schedule, optimizer, config),
        state_shardings, data_sharding)
    start = int(state.step)
    log_every = max(1, int(config.train.log_every))
    every = max(1, int(config.checkpoint.every_steps))
    max_nonfinite = int(config.train.get("max_consecutive_nonfinite", 20))
    progress = Progress(num_steps, start, enabled=verbose and jax.process_index() == 0)

    def meta_for(step):
        return {"step": step, "data_iterator": iterator.get_state(),
                "config": config.to_dict()}

    previous_metrics = None
    stop_reason = None
    started = time.perf_counter()
    with _StopRequest() as stop:
        for step in range(start, num_steps):
            batch = parallel.global_batch(_host_batch(next(iterator)), data_sharding)
            state, metrics = step_fn(state, batch)
            done = step + 1
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
            if done % every == 0 or done == num_steps or stop.signal_name:
                if int(metrics["nonfinite_consecutive"]) >= max_nonfinite:
                    stop_reason = "nonfinite"
                    break
                checkpointer.save(done, state, meta_for(done))
            if stop.signal_name:
                stop_reason = "signal"
                break
    progress.close()
    checkpointer.close()
    if stop_reason == "signal":
        raise TrainingStopped(f"received {stop.signal_name}: saved a checkpoint at step "
                              f"{int(state.step)} in {workdir}; run the same command to continue",
                              exit_code=128 + int(getattr(signal, stop.signal_name)))
    if stop_reason == "nonfinite":
        raise TrainingStopped(
            f"stopped: {max_nonfinite} training steps in a row had a non-finite loss or gradient "
            f"(they were skipped, parameters were not updated). The last good checkpoint is "
            f"kept: steps {checkpointer.all_steps()} in {workdir}. Lower optim.learning_rate or "
            f"check the data for NaNs.")
    if write_samples:
        from jax.experimental import multihost_utils

        from jaxdiff.generate import generate_images, save_grid

        # Every process takes part in the gather; process 0 samples on its own devices.
        ema_params = multihost_utils.process_allgather(state.ema_params, tiled=True) \
            if jax.process_count() > 1 else state.ema_params
    if write_samples and jax.process_index() == 0:
        images = generate_images(config, graphdef, ema_params,
                                 num=config.sampling.num_samples, seed=config.train.seed)
        save_grid(images, workdir / "samples.png")
        if verbose:
            print(f"wrote {workdir / 'samples.png'}", file=sys.stderr)
    return state


def _check_data_matches_model(info, config) -> None:
    # The pipeline resizes to data.image_size and converts to data.channels.
    if config.data.channels != config.model.in_channels:
        raise ValueError(f"data.channels={config.data.channels} but the model expects "
                         f"model.in_channels={config.model.in_channels}; make them equal")
    if config.data.image_size != config.model.image_size:
        raise ValueError(f"data.image_size={config.data.image_size} but "
                         f"model.image_size={config.model.image_size}; make them equal")
    num_classes = int(config.model.get("num_classes", 0))
    if num_classes and info.num_classes and num_classes != info.num_classes:
        raise ValueError(f"model.num_classes={num_classes} but dataset {config.data.name!r} has "
                         f"{info.num_classes} classes")
    if num_classes and not info.num_classes:
        raise ValueError(f"model.num_classes={num_classes} asks for a class-conditional model but "
                         f"dataset {config.data.name!r} has no labels")
