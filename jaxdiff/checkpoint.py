"""Checkpoints with orbax's CheckpointManager: save every N steps, keep the last K, exact resume.

Each step is its own folder under `<workdir>/checkpoints/<step>/` holding the `TrainState`
("state") and a JSON item ("meta": the config, the data iterator state, the step). orbax commits
a step atomically (written to a temporary folder, then renamed), so a crash during a save leaves
the previous checkpoints intact and the partial one is never listed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jax

CONFIG_FILE = "config.json"


class CheckpointError(RuntimeError):
    """A checkpoint could not be read; the message names the step and what other steps exist."""


def _ocp():
    import orbax.checkpoint as ocp  # lazy: orbax pulls in a lot at import time

    return ocp


class Checkpointer:
    """Thin owner of an orbax CheckpointManager for one run's workdir."""

    def __init__(self, workdir: str | os.PathLike, max_to_keep: int | None = 3,
                 read_only: bool = False):
        ocp = _ocp()
        self.workdir = Path(workdir).absolute()
        self.directory = self.workdir / "checkpoints"
        if read_only and not self.directory.is_dir():
            raise FileNotFoundError(f"no checkpoints in {str(self.workdir)!r}: the folder "
                                    f"{str(self.directory)!r} does not exist; train first with "
                                    f"`jaxdiff train --workdir {self.workdir}`")
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=not read_only, read_only=read_only,
            enable_async_checkpointing=True)
        self.manager = ocp.CheckpointManager(self.directory, options=options,
                                             item_names=("state", "meta"))

    def all_steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state, meta: dict[str, Any]) -> None:
        """Starts an (asynchronous) save of `state` and `meta` at `step`."""
        ocp = _ocp()
        if step in self.manager.all_steps():
            return
        self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                        meta=ocp.args.JsonSave(meta)))

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()

    def _check_step(self, step: int | None) -> int:
        steps = self.all_steps()
        if not steps:
            raise FileNotFoundError(f"no checkpoints in {str(self.directory)!r}")
        if step is None:
            return steps[-1]
        if step not in steps:
            raise ValueError(f"no checkpoint at step {step} in {str(self.directory)!r}; "
                             f"available steps: {steps}")
        return step

    def restore(self, abstract_state, step: int | None = None):
        """Restores (state, meta) at `step` (default: latest) into the structure of
        `abstract_state` (e.g. from `jax.eval_shape`)."""
        ocp = _ocp()
        step = self._check_step(step)
        try:
            restored = self.manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
        except Exception as e:  # orbax/tensorstore raise many types for unreadable files
            raise self._error(step, e) from e
        return restored.state, restored.meta

    def restore_meta(self, step: int | None = None) -> dict:
        ocp = _ocp()
        step = self._check_step(step)
        try:
            return self.manager.restore(step, args=ocp.args.Composite(
                meta=ocp.args.JsonRestore())).meta
        except Exception as e:
            raise self._error(step, e) from e

    def _error(self, step: int, cause: Exception) -> CheckpointError:
        others = [s for s in self.all_steps() if s != step]
        hint = (f"other steps you can restore with --restore_step: {others}" if others
                else "there is no other checkpoint")
        first_line = str(cause).strip().splitlines()[0][:300] if str(cause).strip() else ""
        return CheckpointError(
            f"checkpoint at step {step} in {str(self.directory)!r} could not be read "
            f"({type(cause).__name__}: {first_line}); {hint}. Nothing was deleted.")


def save_config(workdir: str | os.PathLike, config) -> None:
    """Writes the run's config as JSON beside the checkpoints (atomically)."""
    path = Path(workdir) / CONFIG_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(config.to_json(indent=2, sort_keys=True))
    os.replace(tmp, path)


def load_config(workdir: str | os.PathLike):
    """Reads the config saved in a workdir as a ConfigDict."""
    import ml_collections

    path = Path(workdir) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{str(path)!r} not found: is {str(workdir)!r} a jaxdiff workdir? "
                                f"Train one with `jaxdiff train --workdir {workdir}`")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{str(path)!r} is not valid JSON ({e})") from None
    return ml_collections.ConfigDict(_lists_to_tuples(data))


def _lists_to_tuples(value):
    if isinstance(value, dict):
        return {k: _lists_to_tuples(v) for k, v in value.items()}
    if isinstance(value, list):
        return tuple(_lists_to_tuples(v) for v in value)
    return value


# Keys that may change between a run and its resumption: they do not affect the model, the data
# shape or the exactness of the remaining steps' inputs.
HARMLESS_KEYS = (
    "train.num_steps", "train.log_every", "train.sample_every", "train.max_consecutive_nonfinite",
    "checkpoint.", "sampling.", "data.data_dir", "data.worker_count",
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
