"""Checkpoints with orbax's CheckpointManager: save every N steps, keep the last K, exact resume.

Each step is its own folder under `<workdir>/checkpoints/<step>/` holding the `TrainState`
("state") and a JSON item ("meta": the config, the data iterator state, the step, and the
integrity record). orbax commits a step atomically (written to a `*.orbax-checkpoint-tmp*`
folder, then renamed), so a crash during a save leaves the previous checkpoints intact and the
partial one is never listed (it is removed when the next run starts).

Integrity: the storage layer (tensorstore, zarr) reads altered bytes back as different numbers
without complaint, so every save records a SHA-256 of each state array's bytes, and of the rest
of the meta item, in `meta["integrity"]`; `restore` recomputes them and raises `CheckpointError`
naming the step, the array and the other restorable steps on a mismatch. Nothing is ever
deleted or skipped silently: a corrupt checkpoint is an error, never a fallback to an older one.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import time
from typing import Any

import jax
import numpy as np
from etils import epath

from jaxdiff.validation import InputError, InputFileNotFoundError, InputTypeError

CONFIG_FILE = "config.json"
SUPERSEDED_DIR = "superseded_checkpoints"
INTEGRITY_KEY = "integrity"


class CheckpointError(RuntimeError):
    """A checkpoint could not be read or is corrupt; the message names the step and the other
    steps that can be restored with `--restore_step`."""


def _ocp():
    import orbax.checkpoint as ocp  # lazy: orbax pulls in a lot at import time

    return ocp


def run_path(workdir: str | os.PathLike) -> epath.Path:
    """The run folder as an `etils.epath.Path`: URIs (gs://..., s3://...) unchanged, local paths
    made absolute (so that messages name the real folder)."""
    text = os.fspath(workdir)
    if "://" in text:
        return epath.Path(text)
    return epath.Path(os.path.abspath(text))


def _json_digest(value) -> str:
    """sha256 of the canonical JSON form (as the value reads back after a JSON round trip)."""
    canonical = json.dumps(json.loads(json.dumps(value)), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def integrity_record(meta: dict[str, Any]) -> dict[str, Any]:
    """What `Checkpointer.save` stores under meta["integrity"] (the arrays' digests are the
    separate "integrity" item, see `jaxdiff.checkpoint_integrity`)."""
    rest = {k: v for k, v in meta.items() if k != INTEGRITY_KEY}
    return {"algorithm": "sha256", "meta": _json_digest(rest)}


def _legacy_array_checksums(tree) -> dict[str, str]:
    """{path: sha256 of the whole array}: the form of records written before shard digests."""
    from jaxdiff.checkpoint_integrity import block_digest

    return {jax.tree_util.keystr(p): block_digest(x)
            for p, x in jax.tree_util.tree_leaves_with_path(tree)}


def _without_integrity(meta: dict) -> dict:
    return {k: v for k, v in meta.items() if k != INTEGRITY_KEY}


class _DrainingEventLoop(asyncio.SelectorEventLoop):
    """An event loop whose close() first lets the tasks started on it finish.

    orbax runs each restore in a fresh event loop and closes it when the restore returns or
    raises. When one array fails to read, the reads of the other arrays are still in flight in
    tensorstore's threads; after the loop is closed they complete into it and print
    "RuntimeError: Event loop is closed" tracebacks (at a random moment, often at exit).
    Waiting for them here (they are bounded reads whose errors are already reported by the
    first failure) makes a failed restore end cleanly.
    """

    def close(self) -> None:
        if not self.is_closed() and not self.is_running():
            pending = [t for t in asyncio.all_tasks(self) if not t.done()]
            if pending:
                self.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self.run_until_complete(self.shutdown_asyncgens())
            self.run_until_complete(self.shutdown_default_executor())
        super().close()


class _DrainingLoopPolicy(asyncio.DefaultEventLoopPolicy):
    _loop_factory = _DrainingEventLoop


@contextlib.contextmanager
def _loops_that_finish_their_reads():
    """While active, the event loops orbax creates drain their tasks before closing. The
    process-wide policy is switched only for the duration of one restore and then put back."""
    previous = asyncio.get_event_loop_policy()
    asyncio.set_event_loop_policy(_DrainingLoopPolicy())
    try:
        yield
    finally:
        asyncio.set_event_loop_policy(previous)


def _cause_text(cause: Exception) -> str:
    text = " ".join(str(cause).split())
    text = text.split(" See full TensorStore details")[0]  # the rest is a repr of a bound method
    return f"{type(cause).__name__}: {text[:300]}" if text else type(cause).__name__


class Checkpointer:
    """Thin owner of an orbax CheckpointManager for one run's workdir.

    Args:
      workdir: the run folder (a local path or a URI such as gs://bucket/run); checkpoints live
        in `<workdir>/checkpoints/<step>/`.
      max_to_keep: how many of the newest steps orbax keeps (older ones are deleted after a
        successful save); None keeps all.
      read_only: open an existing run for reading (sampling, evaluation) without writing.

    Use it as a context manager (or call `close()`), also when a restore fails.
    """

    def __init__(self, workdir: str | os.PathLike, max_to_keep: int | None = 3,
                 read_only: bool = False):
        ocp = _ocp()
        from jaxdiff.checkpoint_integrity import ITEM, ShardChecksumHandler

        if max_to_keep is not None and (isinstance(max_to_keep, bool) or
                                        not isinstance(max_to_keep, int) or max_to_keep < 1):
            raise InputError(f"max_to_keep must be None or an integer >= 1; got {max_to_keep!r}")
        self.workdir = run_path(workdir)
        self.directory = self.workdir / "checkpoints"
        if read_only and not self.directory.is_dir():
            raise InputFileNotFoundError(
                f"no checkpoints in {str(self.workdir)!r}: the folder "
                f"{str(self.directory)!r} does not exist; train first with "
                f"`jaxdiff train --workdir {self.workdir}`")
        # Partial (uncommitted) saves of a crashed run are removed when a writer opens the run.
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=not read_only, read_only=read_only,
            enable_async_checkpointing=True, cleanup_tmp_directories=not read_only)
        self.manager = ocp.CheckpointManager(
            self.directory, options=options,
            item_handlers={"state": ocp.StandardCheckpointHandler(),
                           "meta": ocp.JsonCheckpointHandler(),
                           ITEM: ShardChecksumHandler()})

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc) -> bool:
        self.close()
        return False

    def all_steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state, meta: dict[str, Any]) -> None:
        """Starts an (asynchronous) save of `state` and `meta` at `step`.

        Each process's shards are hashed in the background (see
        `jaxdiff.checkpoint_integrity`); the digests are committed with the checkpoint, and a
        digest of the rest of `meta` goes into meta["integrity"]. Raises CheckpointError if
        `step` already exists (a run continued from an older step with `--restore_step` moves
        the newer ones aside first).
        """
        ocp = _ocp()
        from jaxdiff.checkpoint_integrity import ShardChecksumSave, start_checksums

        if step in self.manager.all_steps():
            raise CheckpointError(f"a checkpoint at step {step} already exists in "
                                  f"{str(self.directory)!r}; it was not overwritten")
        meta = {k: v for k, v in meta.items() if k != INTEGRITY_KEY}
        meta[INTEGRITY_KEY] = integrity_record(meta)
        digests = start_checksums(state)
        self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta),
            integrity=ShardChecksumSave(digests)))

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()

    def _check_step(self, step: int | None) -> int:
        steps = self.all_steps()
        if not steps:
            raise InputFileNotFoundError(f"no checkpoints in {str(self.directory)!r}")
        if step is None:
            return steps[-1]
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)):
            raise InputTypeError(f"step must be an integer; got {step!r}")
        if step not in steps:
            raise InputError(f"no checkpoint at step {step} in {str(self.directory)!r}; "
                             f"available steps: {steps}")
        return int(step)

    def restore(self, abstract_state, step: int | None = None):
        """Restores (state, meta) at `step` (default: latest) into the structure of
        `abstract_state` (e.g. `abstract_like(state)` or `jax.eval_shape`), and checks them
        against the checksums saved with them. `meta` is returned as it was given to `save`.

        Raises:
          CheckpointError: the files cannot be read, or hold other values than were saved;
            the message names the step and lists the other steps. Nothing is deleted, and
            no other step is tried in its place.
        """
        ocp = _ocp()
        from jaxdiff.checkpoint_integrity import ITEM, ShardChecksumRestore

        step = self._check_step(step)
        items = {"state": ocp.args.StandardRestore(abstract_state), "meta": ocp.args.JsonRestore()}
        if (self.directory / str(step) / ITEM).exists():  # older checkpoints have none
            items[ITEM] = ShardChecksumRestore()
        try:
            with _loops_that_finish_their_reads():
                restored = self.manager.restore(step, args=ocp.args.Composite(**items))
        except Exception as e:  # orbax/tensorstore raise many types for unreadable files
            raise self._error(step, e) from e
        self._verify(step, restored.state, restored.meta, restored.get(ITEM))
        return restored.state, _without_integrity(restored.meta)

    def restore_meta(self, step: int | None = None) -> dict:
        """The meta item (config, data iterator state, step) at `step`, checked."""
        ocp = _ocp()
        step = self._check_step(step)
        try:
            with _loops_that_finish_their_reads():
                meta = self.manager.restore(step, args=ocp.args.Composite(
                    meta=ocp.args.JsonRestore())).meta
        except Exception as e:
            raise self._error(step, e) from e
        self._verify(step, None, meta)
        return _without_integrity(meta)

    def _verify(self, step: int, state, meta, shard_record=None) -> None:
        from jaxdiff.checkpoint_integrity import verify

        if not isinstance(meta, dict):
            raise self._error(step, problem=f"its meta item is {type(meta).__name__}, not a dict")
        record = meta.get(INTEGRITY_KEY)
        if record is None:  # written before integrity records existed: nothing to compare
            return
        rest = {k: v for k, v in meta.items() if k != INTEGRITY_KEY}
        if _json_digest(rest) != record.get("meta"):
            raise self._error(step, problem="its meta item (config, data iterator state) does "
                                            "not match the checksum saved with it")
        if state is None:
            return
        if shard_record is None and record.get("state") is not None:  # whole-array digests
            shard_record = {k: {"*": v} for k, v in record["state"].items()}
            actual = {k: {"*": v} for k, v in _legacy_array_checksums(state).items()}
            bad = sorted(k for k in shard_record if actual.get(k) != shard_record[k])
            missing = sorted(set(actual) ^ set(shard_record))
        elif shard_record is not None:
            bad, missing, _ = verify(state, shard_record)
        else:
            return
        if missing:
            raise self._error(step, problem=f"its arrays and the ones asked for differ: "
                                            f"{missing[:3]}...")
        if bad:
            raise self._error(step, problem=(
                f"{len(bad)} array(s) read back with other values than were saved (altered "
                f"or damaged files), e.g. state{bad[0]}"))

    def _error(self, step: int, cause: Exception | None = None,
               problem: str | None = None) -> CheckpointError:
        others = [s for s in self.all_steps() if s != step]
        hint = (f"other steps you can restore with --restore_step: {others}" if others
                else "there is no other checkpoint")
        what = (f"is corrupt: {problem}" if problem is not None
                else f"could not be read ({_cause_text(cause)})")
        return CheckpointError(f"checkpoint at step {step} in {str(self.directory)!r} {what}; "
                               f"{hint}. Nothing was deleted.")

    def supersede_after(self, step: int) -> list[epath.Path]:
        """Moves the checkpoints of steps after `step` out of the way, into
        `<workdir>/superseded_checkpoints/` (nothing is deleted), so that a run continued from
        `step` can save those steps again and orbax's max_to_keep never removes `step` in favour
        of them. Returns the new paths."""
        later = [s for s in self.all_steps() if s > step]
        if not later:
            return []
        self.manager.wait_until_finished()
        # One process moves the shared folders; the others wait until they are moved.
        moved = self._move_later(later) if jax.process_index() == 0 else []
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices("jaxdiff_supersede_after")
        self.manager.reload()
        return moved

    def _move_later(self, later: list[int]) -> list[epath.Path]:
        target = self.workdir / SUPERSEDED_DIR
        target.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        moved = []
        for s in later:
            source = self.directory / str(s)
            if not source.exists():
                continue
            dest = target / f"{s}-{stamp}"
            n = 1
            while dest.exists():
                dest, n = target / f"{s}-{stamp}-{n}", n + 1
            source.rename(dest)
            moved.append(dest)
        return moved


def save_config(workdir: str | os.PathLike, config) -> None:
    """Writes the run's config as JSON beside the checkpoints (atomically)."""
    path = run_path(workdir) / CONFIG_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / (CONFIG_FILE + ".tmp")
    tmp.write_text(config.to_json(indent=2, sort_keys=True))
    tmp.replace(path)


def load_config(workdir: str | os.PathLike):
    """Reads the config saved in a workdir as a locked ConfigDict of the preset it records.

    A config.json written by an older version (keys missing) is completed from that preset,
    with a note (`jaxdiff.configs.complete_saved_config`).
    """
    from jaxdiff.configs import complete_saved_config

    path = run_path(workdir) / CONFIG_FILE
    if not path.is_file():
        raise InputFileNotFoundError(
            f"{str(path)!r} not found: is {str(workdir)!r} a jaxdiff workdir? "
            f"Train one with `jaxdiff train --workdir {workdir}`")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{str(path)!r} is not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{str(path)!r} does not hold a config (a JSON object)")
    return complete_saved_config(data, source=repr(str(path)))


# Keys that may change between a run and its resumption: they do not affect the model, the data
# shape or the exactness of the remaining steps' inputs.
HARMLESS_KEYS = (
    "train.num_steps", "train.log_every", "train.sample_every", "train.max_consecutive_nonfinite",
    "checkpoint.", "sampling.", "data.data_dir", "data.worker_count",
    "preset",  # a name only: the values the preset gave are compared key by key
)


def flatten(config, prefix: str = "") -> dict[str, Any]:
    """ConfigDict/dict -> {"a.b": value} with lists turned into tuples."""
    items = config.items() if hasattr(config, "items") else []
    out = {}
    for k, v in items:
        if hasattr(v, "items"):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = tuple(v) if isinstance(v, list) else v
    return out


def config_differences(saved, requested) -> dict[str, tuple[Any, Any]]:
    """Keys whose values differ and which are not harmless: {key: (saved, requested)}."""
    a, b = flatten(saved), flatten(requested)
    diffs = {}
    for key in sorted(set(a) | set(b)):
        if any(key == h or (h.endswith(".") and key.startswith(h)) for h in HARMLESS_KEYS):
            continue
        if a.get(key) != b.get(key):
            diffs[key] = (a.get(key, "<missing>"), b.get(key, "<missing>"))
    return diffs


def abstract_like(tree):
    """ShapeDtypeStructs for a pytree of arrays (keeps typed PRNG keys)."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                                       sharding=getattr(x, "sharding", None)),
                        tree)
