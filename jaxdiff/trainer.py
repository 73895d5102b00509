"""The training run: config -> data -> state -> jitted step -> loop with logging and checkpoints.

`train(config, workdir)` starts a new run or continues the one in `workdir` from its latest
checkpoint, exactly: params, optimizer state, EMA, step, PRNG key and the data iterator position
are all restored, so an interrupted-and-resumed run equals an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff import checkpoint as ckpt_lib
from jaxdiff import parallel, training
from jaxdiff.faults import FaultInjection
from jaxdiff.metrics_log import MetricsLog
from jaxdiff.progress import Progress
from jaxdiff.validate_config import validate_config
from jaxdiff.validation import InputError, check_int


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


@jax.jit
def _all_finite(tree) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
              if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def _host_batch(batch: dict) -> dict:
    return {"image": np.asarray(batch["image"], np.float32),
            "label": np.asarray(batch["label"], np.int32)}


@dataclasses.dataclass
class _Run:
    """What the step loop needs of an opened (new or resumed) run."""

    state: training.TrainState
    graphdef: Any
    step_fn: Callable
    iterator: Any
    data_sharding: jax.sharding.Sharding
    checkpointer: ckpt_lib.Checkpointer
    metrics_log: MetricsLog
    task: Any  # what is trained (config.task; see jaxdiff.tasks)


def train(config, workdir, *, restore_step: int | None = None, write_samples: bool = True,
          verbose: bool = True, faults: FaultInjection | None = None):
    """Trains (or continues training) the model described by `config` in `workdir`.

    Returns the final TrainState. Writes `<workdir>/checkpoints/<step>/`, `config.json`,
    `metrics.jsonl` and, at the end, `samples.png` (EMA parameters, config.sampling).
    `faults` injects NaN batches or slow steps for tests (default: read from the environment,
    see `jaxdiff.faults`). Raises TrainingStopped when the run stops early.
    """
    workdir = Path(workdir)
    validate_config(config)
    faults = FaultInjection.from_environment() if faults is None else faults
    run = open_run(config, workdir, restore_step=restore_step, verbose=verbose)
    run.step_fn = faults.wrap_step(run.step_fn)
    try:
        state, stop_reason, signal_name = _step_loop(config, run, verbose)
    finally:
        run.checkpointer.close()
    if stop_reason is not None:
        raise _stopped(stop_reason, signal_name, config, int(state.step), workdir,
                       run.checkpointer.all_steps())
    if write_samples:
        _write_final_samples(run, state, workdir, verbose)
    return state


def open_run(config, workdir: Path, *, restore_step: int | None = None,
             verbose: bool = True) -> _Run:
    """Checks that `config` may train in `workdir`, builds the state, data and jitted step,
    and restores the latest checkpoint (or `restore_step`) if there is one."""
    from jaxdiff.data import dataset_info, input_pipeline
    from jaxdiff.tasks import make_task

    check_int(config.train.max_consecutive_nonfinite, "train.max_consecutive_nonfinite", 1)
    task = make_task(config, workdir)
    task.check_data(dataset_info(config.data))
    existing = saved_steps(workdir)
    if restore_step is not None:
        check_int(restore_step, "restore_step", 0)
        if restore_step not in existing:
            raise InputError(f"--restore_step {restore_step}: there is no checkpoint at that step "
                             f"in {str(workdir / 'checkpoints')!r}; available steps: {existing}")
    if existing:  # a fresh run (or one killed before its first save) may change anything
        check_resume_compatible(workdir, config)

    mesh = parallel.make_mesh(config.mesh)
    graphdef, optimizer, state, state_shardings = training.init_sharded_train_state(
        config, mesh, init=task.init_train_state)
    data_sharding = parallel.batch_sharding(mesh)
    checkpointer = ckpt_lib.Checkpointer(workdir, max_to_keep=config.checkpoint.max_to_keep)
    iterator = input_pipeline(config.data, split="train",
                              batch_size=config.train.batch_size // jax.process_count(),
                              seed=config.train.seed)
    metrics_log = MetricsLog(workdir, enabled=jax.process_index() == 0)
    if verbose and jax.process_count() > 1:  # every process says what it feeds
        print(f"process {jax.process_index()} of {jax.process_count()}: feeds "
              f"{config.train.batch_size // jax.process_count()} of the "
              f"{config.train.batch_size} examples of each batch", file=sys.stderr)
    latest = checkpointer.latest_step() if restore_step is None else restore_step
    if latest is not None:
        try:
            state = _restore(checkpointer, state, iterator, latest)
        except BaseException:
            checkpointer.close()  # nothing of orbax's may outlive the error (tracebacks at exit)
            raise
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
    if jax.process_index() == 0:
        ckpt_lib.save_config(workdir, config)

    step_fn = training.jit_train_step(task.make_train_step(graphdef, optimizer),
                                      state_shardings, data_sharding)
    return _Run(state, graphdef, step_fn, iterator, data_sharding, checkpointer, metrics_log,
                task)


def _restore(checkpointer, abstract_source, iterator, step: int):
    """The state at `step`; moves `iterator` to where that step left the data."""
    # A corrupt checkpoint raises CheckpointError here: never a silent fall-back to another.
    state, meta = checkpointer.restore(ckpt_lib.abstract_like(abstract_source), step)
    if int(state.step) != step:
        raise ckpt_lib.CheckpointError(
            f"checkpoint at step {step} in {str(checkpointer.directory)!r} holds a state "
            f"at step {int(state.step)}; it was not written by this trainer. Nothing was "
            f"deleted.")
    iterator.set_state(meta["data_iterator"])
    return state


def _step_loop(config, run: _Run, verbose: bool):
    """Runs the steps from `run.state.step` to `train.num_steps` with logging and checkpoints.

    Returns (state, stop_reason, signal_name): stop_reason None when all steps ran, else
    "signal", "nonfinite" or "nonfinite_params".
    """
    state, iterator, metrics_log = run.state, run.iterator, run.metrics_log
    num_steps = int(config.train.num_steps)
    max_nonfinite = int(config.train.max_consecutive_nonfinite)
    log_every = int(config.train.log_every)  # both >= 1 (validate_config)
    every = int(config.checkpoint.every_steps)
    sample_every = int(config.train.sample_every)  # TensorBoard sample grids
    start = int(state.step)
    progress = Progress(num_steps, start, enabled=verbose and jax.process_index() == 0)
    previous_metrics = None
    stop_reason = None
    started = time.perf_counter()
    with _StopRequest() as stop:
        for step in range(start, num_steps):
            done = step + 1
            batch = parallel.global_batch(run.task.host_batch(next(iterator)), run.data_sharding)
            state, metrics = run.step_fn(state, batch)
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
                metrics_log.write_image(done, "samples", run.task.sample_grid(
                    run.graphdef, state.ema_params, min(16, config.sampling.num_samples)))
            if done % every == 0 or done == num_steps or stop.signal_name:
                if int(metrics["nonfinite_consecutive"]) >= max_nonfinite:
                    stop_reason = "nonfinite"
                    break
                if not bool(_all_finite((state.params, state.ema_params))):
                    stop_reason = "nonfinite_params"
                    break
                run.checkpointer.save(done, state, {"step": done,
                                                    "data_iterator": iterator.get_state(),
                                                    "config": config.to_dict()})
            if stop.signal_name:
                stop_reason = "signal"
                break
    progress.close()
    return state, stop_reason, stop.signal_name


def _stopped(reason: str, signal_name: str | None, config, step: int, workdir: Path,
             kept: list[int]) -> TrainingStopped:
    """The TrainingStopped error that tells the user why the run stopped and what is kept."""
    if reason == "signal":
        return TrainingStopped(f"received {signal_name}: saved a checkpoint at step {step} in "
                               f"{workdir}; run the same command to continue",
                               exit_code=128 + int(getattr(signal, signal_name)))
    if reason == "nonfinite":
        return TrainingStopped(
            f"stopped: {config.train.max_consecutive_nonfinite} training steps in a row had a "
            f"non-finite loss or gradient (they were skipped, parameters were not updated). The "
            f"last good checkpoint is kept: steps {kept} in {workdir}. Lower "
            f"optim.learning_rate or check the data for NaNs.")
    return TrainingStopped(
        f"stopped at step {step}: the parameters hold NaN or infinite values, so no checkpoint "
        f"was written; the earlier checkpoints are kept: steps {kept} in {workdir}. Lower "
        f"optim.learning_rate or check the data.")


def _write_final_samples(run: _Run, state, workdir: Path, verbose: bool) -> None:
    """The task's end-of-run pictures (`<workdir>/samples.png` for pixel diffusion, and a
    TensorBoard picture) from the EMA parameters."""
    from jax.experimental import multihost_utils

    # Every process takes part in the gather; process 0 samples on its own devices.
    ema_params = multihost_utils.process_allgather(state.ema_params, tiled=True) \
        if jax.process_count() > 1 else state.ema_params
    if jax.process_index() == 0:
        run.task.write_pictures(run.graphdef, ema_params, workdir, run.metrics_log,
                                int(state.step), verbose)


def sample_grid(config, graphdef, params, num: int):
    """A uint8 grid of `num` samples with `params` (labels captioned for conditional models)."""
    from jaxdiff.generate import generate_images
    from jaxdiff.viz import image_grid

    images = generate_images(config, graphdef, params, num=num, seed=config.train.seed)
    num_classes = int(config.model.num_classes)
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
    num_classes = int(config.model.num_classes)
    if num_classes and info.num_classes and num_classes != info.num_classes:
        raise InputError(f"model.num_classes={num_classes} but dataset {config.data.name!r} has "
                         f"{info.num_classes} classes")
    if num_classes and not info.num_classes:
        raise InputError(f"model.num_classes={num_classes} asks for a class-conditional model but "
                         f"dataset {config.data.name!r} has no labels")
