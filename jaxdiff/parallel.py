"""Parallelism with JAX's own runtime: a ("data", "fsdp") device mesh, NamedShardings for the
batch and the train state, global batches from per-process data, and multi-process start-up.

Data parallelism splits the batch over both mesh axes. With `mesh.fsdp > 1`, every array of the
train state (params, optimizer moments, EMA) that has an axis divisible by the fsdp size is split
along its largest such axis (ZeRO-3 / FSDP style); XLA inserts the all-gathers and
reduce-scatters. No pmap.
"""

from __future__ import annotations

import os

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
    data = int(mesh_config.get("data", -1))
    fsdp = int(mesh_config.get("fsdp", 1))
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


def initialize_distributed(coordinator_address: str | None = None,
                           num_processes: int | None = None,
                           process_id: int | None = None) -> bool:
    """Calls `jax.distributed.initialize` when the run is launched as several processes.

    Uses the arguments when given, else JAXDIFF_COORDINATOR / JAXDIFF_NUM_PROCESSES /
    JAXDIFF_PROCESS_ID, else JAX's own cluster detection (SLURM, TPU pods, ...) when one of their
    environment variables is present. Returns True when initialised. On CPU, the gloo
    collectives are selected so that cross-process reductions work.
    """
    coordinator_address = coordinator_address or os.environ.get("JAXDIFF_COORDINATOR")
    if num_processes is None and os.environ.get("JAXDIFF_NUM_PROCESSES"):
        num_processes = int(os.environ["JAXDIFF_NUM_PROCESSES"])
    if process_id is None and os.environ.get("JAXDIFF_PROCESS_ID"):
        process_id = int(os.environ["JAXDIFF_PROCESS_ID"])
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
    if os.environ.get("JAX_PLATFORMS", "").startswith("cpu") or not _has_accelerator_plugin():
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id)
    if num_processes is not None and jax.process_count() != num_processes:
        raise InputError(f"asked for {num_processes} processes but the runtime reports "
                         f"{jax.process_count()}")
    return True


def _has_accelerator_plugin() -> bool:
    import importlib.util

    return any(importlib.util.find_spec(name) is not None
               for name in ("jax_cuda12_plugin", "jax_cuda13_plugin", "libtpu"))
