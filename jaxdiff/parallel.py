"""Parallelism with JAX's own runtime: a ("data", "fsdp") device mesh, NamedShardings for the
batch and the train state, global batches from per-process data, and multi-process start-up.

Data parallelism splits the batch over both mesh axes. With `mesh.fsdp > 1`, every array of the
train state (params, optimizer moments, EMA) that has an axis divisible by the fsdp size is split
along its largest such axis (ZeRO-3 / FSDP style); XLA inserts the all-gathers and
reduce-scatters. No pmap.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import threading
import time

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxdiff.validation import InputError

DATA_AXES = ("data", "fsdp")
# Arrays smaller than this stay replicated under fsdp: splitting them saves nothing.
FSDP_MIN_SIZE = 2**12


def mesh_shape(mesh_config, num_devices: int | None = None) -> tuple[int, int]:
    """(data, fsdp) sizes from the config; -1 means "all remaining devices"."""
    n = jax.device_count() if num_devices is None else num_devices
    data, fsdp = int(mesh_config["data"]), int(mesh_config["fsdp"])
    if data == 0 or fsdp == 0 or data < -1 or fsdp < -1 or (data == -1 and fsdp == -1):
        raise InputError(f"mesh.data={data} and mesh.fsdp={fsdp}: each must be a positive size "
                         f"or -1 (all remaining devices), and at most one may be -1")
    if data == -1:
        if n % fsdp:
            raise InputError(f"mesh.fsdp={fsdp} does not divide the number of devices ({n})")
        data = n // fsdp
    if fsdp == -1:
        if n % data:
            raise InputError(f"mesh.data={data} does not divide the number of devices ({n})")
        fsdp = n // data
    if data * fsdp != n:
        raise InputError(f"mesh.data={data} x mesh.fsdp={fsdp} = {data * fsdp} must equal the "
                         f"number of devices ({n})")
    return data, fsdp


def make_mesh(mesh_config) -> Mesh:
    data, fsdp = mesh_shape(mesh_config)
    # Auto axes: shardings are constraints for XLA's partitioner, model code stays unannotated.
    return jax.make_mesh((data, fsdp), DATA_AXES, devices=jax.devices(),
                         axis_types=(jax.sharding.AxisType.Auto,) * 2)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over every device of the mesh."""
    return NamedSharding(mesh, P(DATA_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def _leaf_spec(shape: tuple[int, ...], fsdp: int) -> P:
    if fsdp <= 1 or not shape or int(np.prod(shape)) < FSDP_MIN_SIZE:
        return P()
    candidates = [i for i, d in enumerate(shape) if d % fsdp == 0]
    if not candidates:
        return P()
    axis = max(candidates, key=lambda i: shape[i])
    spec = [None] * len(shape)
    spec[axis] = "fsdp"
    return P(*spec)


def state_sharding(state, mesh: Mesh):
    """A pytree of NamedShardings for `state` (replicated, or fsdp-split where it pays)."""
    fsdp = mesh.shape["fsdp"]
    return jax.tree.map(lambda x: NamedSharding(mesh, _leaf_spec(tuple(x.shape), fsdp)), state)


def check_global_batch(batch_size: int, num_devices: int) -> None:
    """The global batch must split evenly over the devices and over the processes."""
    processes = jax.process_count()
    if batch_size % num_devices or batch_size % processes:
        raise InputError(f"train.batch_size={batch_size} is not divisible by the number of "
                         f"devices the batch is split over ({num_devices}) and of processes "
                         f"({processes})")


def global_batch(local_batch: dict, sharding: NamedSharding) -> dict:
    """Assembles per-process arrays (this process's rows) into global jax.Arrays."""
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
            for k, v in local_batch.items()}


# Seconds a process may stay silent before the others call it lost and stop
# (JAXDIFF_LOST_PROCESS_TIMEOUT overrides it); JAX's own heartbeat timeout is set above it.
LOST_PROCESS_TIMEOUT = 45


def _env_int(name: str) -> int | None:
    text = os.environ.get(name)
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise InputError(f"{name}={text!r} must be an integer") from None


def initialize_distributed(coordinator_address: str | None = None,
                           num_processes: int | None = None,
                           process_id: int | None = None) -> bool:
    """Calls `jax.distributed.initialize` when the run is launched as several processes.

    Uses the arguments when given, else JAXDIFF_COORDINATOR / JAXDIFF_NUM_PROCESSES /
    JAXDIFF_PROCESS_ID, else JAX's own cluster detection (SLURM, TPU pods, ...) when one of their
    environment variables is present. Returns True when initialised. On CPU, the gloo
    collectives are selected so that cross-process reductions work. Must run before anything
    touches a device. When another process dies (silent for LOST_PROCESS_TIMEOUT seconds) or the
    coordinator cannot be reached, this process prints `lost_process_message` naming it and
    exits with code 1 (`watch_processes`), instead of waiting in a collective forever.
    """
    if jax.distributed.is_initialized():
        return True
    coordinator_address = coordinator_address or os.environ.get("JAXDIFF_COORDINATOR")
    if num_processes is None:
        num_processes = _env_int("JAXDIFF_NUM_PROCESSES")
    if process_id is None:
        process_id = _env_int("JAXDIFF_PROCESS_ID")
    explicit = coordinator_address is not None or num_processes is not None
    detected = any(v in os.environ for v in ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE",
                                             "TPU_WORKER_HOSTNAMES", "JAX_COORDINATOR_ADDRESS"))
    if not (explicit or detected):
        return False
    if explicit:
        if coordinator_address is None or num_processes is None or process_id is None:
            raise InputError(
                f"a multi-process run needs the coordinator address, the number of processes and "
                f"this process's id; got coordinator={coordinator_address!r}, "
                f"num_processes={num_processes!r}, process_id={process_id!r}")
        if not 0 <= process_id < num_processes:
            raise InputError(f"process_id={process_id} must be in [0, num_processes="
                             f"{num_processes})")
    lost_after = _env_int("JAXDIFF_LOST_PROCESS_TIMEOUT") or LOST_PROCESS_TIMEOUT
    if os.environ.get("JAX_PLATFORMS", "").startswith("cpu") or not _has_accelerator_plugin():
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id,
                               heartbeat_timeout_seconds=max(100, 2 * lost_after))
    if num_processes is not None and jax.process_count() != num_processes:
        raise InputError(f"asked for {num_processes} processes but the runtime reports "
                         f"{jax.process_count()}")
    if jax.process_count() > 1:
        watch_processes(lost_after)
    return True


def lost_process_message(lost: list[int], this: int, count: int) -> str:
    """What a surviving process prints when `lost` processes of the run are gone."""
    names = ", ".join(str(p) for p in lost) if lost else "(unknown)"
    return (f"jaxdiff: error: lost process {names} of the {count}-process run (it stopped or "
            f"became unreachable; see its own log for why); process {this} stops too instead "
            f"of waiting for it. Checkpoints already committed are intact: start all "
            f"{count} processes again with the same command to continue from the latest one.")


def watch_processes(timeout: float, interval: float = 2.0) -> threading.Thread:
    """Starts a daemon thread that keeps this process's counter in the coordination service's
    key-value store going up every `interval` seconds and watches the others' counters. When one
    has not moved for `timeout` seconds (its process died or hangs), or the coordinator
    (process 0) cannot be reached, it prints `lost_process_message` and ends this process with
    exit code 1 (os._exit: the main thread may be blocked in a collective that never completes).
    Counters, not clocks, so hosts need no synchronised time. `timeout` is kept below JAX's
    heartbeat timeout, whose own reaction is an abort with a C++ log line."""
    from jax._src import distributed

    client = distributed.global_state.client
    this, count = jax.process_index(), jax.process_count()
    stopping = threading.Event()

    def finish():  # a normal end is no loss: say so (atexit runs before JAX's own shutdown)
        stopping.set()
        with contextlib.suppress(Exception):  # the service may be gone already
            client.key_value_set(f"jaxdiff/alive/{this}", "done", allow_overwrite=True)

    atexit.register(finish)

    def watch():
        last = {p: (None, time.monotonic()) for p in range(count) if p != this}
        beat = 0
        while not stopping.wait(interval):
            beat += 1
            lost = []
            try:
                client.key_value_set(f"jaxdiff/alive/{this}", str(beat), allow_overwrite=True)
                for p, (value, since) in last.items():
                    try:
                        now = client.key_value_try_get(f"jaxdiff/alive/{p}")
                    except Exception:  # noqa: BLE001 - not written yet
                        now = None
                    if now == "done":  # ended normally; others may take longer to end
                        continue
                    if now != value:
                        last[p] = (now, time.monotonic())
                    elif time.monotonic() - since > timeout:
                        lost.append(p)
            except Exception:  # noqa: BLE001 - the service (in process 0) is unreachable
                lost = [0] if this != 0 else []
            if lost and not stopping.is_set():
                print(lost_process_message(lost, this, count), file=sys.stderr, flush=True)
                os._exit(1)

    thread = threading.Thread(target=watch, name="jaxdiff-process-watch", daemon=True)
    thread.start()
    return thread


def await_lost_process(error: BaseException) -> None:
    """Called with the error a command failed with. In a multi-process run a failed collective
    (e.g. gloo's "Connection closed by peer") usually means that another process died: wait
    until `watch_processes` names it and ends this process; return (the caller re-raises
    `error`) if no process is found lost by then."""
    text = str(error).lower()
    if jax.process_count() < 2 or not (isinstance(error, jax.errors.JaxRuntimeError) or any(
            word in text for word in ("gloo", "nccl", "connection closed", "unavailable"))):
        return
    time.sleep((_env_int("JAXDIFF_LOST_PROCESS_TIMEOUT") or LOST_PROCESS_TIMEOUT) + 15)


def _has_accelerator_plugin() -> bool:
    import importlib.util

    return any(importlib.util.find_spec(name) is not None
               for name in ("jax_cuda12_plugin", "jax_cuda13_plugin", "libtpu"))
