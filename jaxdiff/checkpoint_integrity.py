"""Content checksums of checkpointed arrays, shard by shard, computed off the training path.

The storage layer (tensorstore, zarr) reads altered bytes back as different numbers without
complaint, so every save records a SHA-256 per stored block: for each array of the state, one
digest per distinct shard (the shard with replica id 0), keyed by the block's global index.
Each process hashes only the shards it holds, in a background thread, from an on-device copy
taken when the save starts (the train step donates the state's buffers, so the originals may be
gone by then); the digests are written by orbax's asynchronous commit as one file per process in
the checkpoint's "integrity" item, so the record is committed atomically with the arrays.
Restore merges the files of all processes and each process checks every recorded block that
lies inside one of the shards it restored (all of them when restored in one process, its own
when restored with the layout it was saved with).

This module imports orbax; `jaxdiff.checkpoint` imports it lazily.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath
from orbax.checkpoint import args as ocp_args
from orbax.checkpoint._src.futures import future as ocp_future
from orbax.checkpoint._src.handlers import async_checkpoint_handler

ITEM = "integrity"
_FILE_PREFIX = "sha256.process_"

# One worker: digests of consecutive saves are computed in order and never compete with each
# other for the host's cores.
_EXECUTOR = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="jaxdiff-checksums")


def block_key(index: tuple[slice, ...], shape: tuple[int, ...]) -> str:
    """'start:stop,start:stop' of a shard's global index ('' for a scalar)."""
    bounds = (s.indices(n)[:2] for s, n in zip(index, shape))
    return ",".join(f"{a}:{b}" for a, b in bounds)


def _parse_key(key: str) -> tuple[tuple[int, int], ...]:
    return tuple(tuple(int(v) for v in part.split(":")) for part in key.split(",")) if key \
        else ()


def block_digest(values) -> str:
    """sha256 of a block's (dtype, shape, bytes); typed PRNG keys as their key data."""
    if jax.dtypes.issubdtype(getattr(values, "dtype", None), jax.dtypes.prng_key):
        values = jax.random.key_data(values)
    values = np.ascontiguousarray(np.asarray(values))
    digest = hashlib.sha256(f"{values.dtype.str}{values.shape}".encode())
    digest.update(memoryview(values).cast("B") if values.size else b"")
    return digest.hexdigest()


def _owned_shards(x):
    """(global index, single-device data) of the shards this process stores for `x`."""
    if not isinstance(x, jax.Array):
        return [(tuple(slice(None) for _ in np.shape(x)), x)]
    return [(s.index, s.data) for s in x.addressable_shards if s.replica_id == 0]


def start_checksums(state) -> concurrent.futures.Future:
    """Starts hashing this process's shards of `state`; returns a Future of
    {leaf path: {block key: sha256}}.

    The only work done now is an on-device copy of each owned shard (dispatched
    asynchronously); the device-to-host transfer and the hashing run in a background thread.
    """
    blocks = []
    for path, x in jax.tree_util.tree_leaves_with_path(state):
        for index, data in _owned_shards(x):
            copy = jnp.copy(data) if isinstance(data, jax.Array) else np.array(data)
            blocks.append((jax.tree_util.keystr(path), block_key(index, np.shape(x)), copy))

    def compute():
        sums: dict[str, dict[str, str]] = {}
        for path, key, copy in blocks:
            sums.setdefault(path, {})[key] = block_digest(copy)
        return sums

    return _EXECUTOR.submit(compute)


def verify(state, record: dict[str, dict[str, str]]) -> tuple[list[str], list[str], int]:
    """Checks the restored `state` against the merged `record`.

    Returns (paths with a mismatching block, paths missing from the record or the state, number
    of blocks checked by this process).
    """
    leaves = {jax.tree_util.keystr(p): x for p, x in jax.tree_util.tree_leaves_with_path(state)}
    missing = sorted(set(leaves) ^ set(record))
    bad, checked = [], 0
    for path in sorted(set(leaves) & set(record)):
        x = leaves[path]
        shards = ([(s.index, s.data) for s in x.addressable_shards] if isinstance(x, jax.Array)
                  else [(tuple(slice(None) for _ in np.shape(x)), x)])
        bounds = [(tuple(s.indices(n)[:2] for s, n in zip(index, np.shape(x))), data)
                  for index, data in shards]
        for key, expected in record[path].items():
            block = _parse_key(key)
            for shard_bounds, data in bounds:
                if all(a0 <= a and b <= b0 for (a, b), (a0, b0) in zip(block, shard_bounds)):
                    local = tuple(slice(a - a0, b - a0)
                                  for (a, b), (a0, _) in zip(block, shard_bounds))
                    checked += 1
                    if block_digest(np.asarray(_host(data))[local]) != expected:
                        bad.append(path)
                    break
    return sorted(set(bad)), missing, checked


def _host(data):
    if jax.dtypes.issubdtype(getattr(data, "dtype", None), jax.dtypes.prng_key):
        return jax.random.key_data(data)
    return data


class ShardChecksumHandler(async_checkpoint_handler.AsyncCheckpointHandler):
    """orbax handler of the "integrity" item: each process writes its own digests file during
    the asynchronous commit; restore reads and merges every process's file."""

    async def _write(self, digests: concurrent.futures.Future, directory: epath.Path) -> None:
        import asyncio

        sums = await asyncio.wrap_future(digests)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / f"{_FILE_PREFIX}{jax.process_index()}.json").write_text(
            json.dumps(sums, sort_keys=True))

    async def async_save(self, directory: epath.Path, args: ShardChecksumSave):
        return [ocp_future.CommitFutureAwaitingContractedSignals(
            self._write(args.digests, directory), name="jaxdiff_checksums")]

    def save(self, directory: epath.Path, args: ShardChecksumSave) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / f"{_FILE_PREFIX}{jax.process_index()}.json").write_text(
            json.dumps(args.digests.result(), sort_keys=True))

    def restore(self, directory: epath.Path, args: ShardChecksumRestore | None = None):
        merged: dict[str, dict[str, str]] = {}
        for path in sorted(directory.glob(f"{_FILE_PREFIX}*.json")):
            for leaf, blocks in json.loads(path.read_text()).items():
                merged.setdefault(leaf, {}).update(blocks)
        return merged

    def metadata(self, directory: epath.Path) -> Any:
        return None

    def finalize(self, directory: epath.Path) -> None:
        pass

    def close(self) -> None:
        pass


@ocp_args.register_with_handler(ShardChecksumHandler, for_save=True)
@dataclasses.dataclass
class ShardChecksumSave(ocp_args.CheckpointArgs):
    """digests: the Future returned by `start_checksums`."""

    digests: concurrent.futures.Future


@ocp_args.register_with_handler(ShardChecksumHandler, for_restore=True)
@dataclasses.dataclass
class ShardChecksumRestore(ocp_args.CheckpointArgs):
    pass
