"""Helpers for the reliability tests: run `jaxdiff train` in a subprocess with a tiny model,
interrupt it, and read checkpoints back for bitwise comparison.

All subprocesses of a test session share one persistent JAX compilation cache, so only the
first run pays for compiling the train step (the cached executable is the same program, so
results are unchanged).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TINY = ["--config.model.base_channels=8", "--config.model.channel_mults=1,2",
        "--config.model.attention_resolutions=8",
        "--config.model.num_res_blocks=1", "--config.model.num_heads=2",
        "--config.model.num_groups=4", "--config.train.batch_size=8",
        "--config.optim.warmup_steps=1", "--config.sampling.num_steps=2",
        "--config.sampling.num_samples=2"]

# The run every interrupted run is compared with: 40 steps, a checkpoint every 10, all kept.
RUN = ["--config.train.num_steps=40", "--config.train.log_every=1",
       "--config.checkpoint.every_steps=10", "--config.checkpoint.max_to_keep=10"]

_CACHE = tempfile.mkdtemp(prefix="jaxdiff-tests-jax-cache-")


def env(**extra: str) -> dict:
    """The subprocess environment; `extra` adds variables (e.g. JAXDIFF_FAULT_STEP_SLEEP)."""
    return dict(os.environ, CI="true", JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=_CACHE,
                JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0", **extra)


def command(subcommand: str, workdir, *args) -> list[str]:
    extra = [*TINY, *RUN] if subcommand == "train" else []
    return [sys.executable, "-m", "jaxdiff.cli", subcommand, "--workdir", str(workdir),
            *extra, *map(str, args)]


def run(subcommand: str, workdir, *args, timeout: float = 600,
        environment: dict | None = None) -> subprocess.CompletedProcess:
    """Runs `jaxdiff <subcommand>` to completion; later --config overrides win; `environment`
    adds variables (e.g. the fault injection of jaxdiff/faults.py)."""
    return subprocess.run(command(subcommand, workdir, *args), check=False, capture_output=True,
                          text=True, timeout=timeout, env=env(**(environment or {})))


class Background:
    """`jaxdiff train` running in the background, its stderr going to a file; `environment`
    adds variables (e.g. JAXDIFF_FAULT_STEP_SLEEP)."""

    def __init__(self, workdir, *args, environment: dict | None = None):
        self.workdir = Path(workdir)
        self.log = self.workdir.parent / f"{self.workdir.name}.stderr"
        with open(self.log, "w") as stderr:
            self.process = subprocess.Popen(command("train", workdir, *args),
                                            env=env(**(environment or {})),
                                            stdout=subprocess.DEVNULL, stderr=stderr)

    @property
    def stderr(self) -> str:
        return self.log.read_text()

    def wait_until(self, condition, timeout: float = 300, poll: float = 0.002) -> None:
        """Polls `condition()` until true; fails if the process ends first."""
        deadline = time.monotonic() + timeout
        while not condition():
            if self.process.poll() is not None:
                raise AssertionError(f"the run ended (exit {self.process.returncode}) before the "
                                     f"awaited moment:\n{self.stderr[-3000:]}")
            if time.monotonic() > deadline:
                self.process.kill()
                raise AssertionError(f"timed out waiting:\n{self.stderr[-3000:]}")
            time.sleep(poll)

    def signal(self, signum: int) -> int:
        self.process.send_signal(signum)
        return self.process.wait(timeout=300)


def checkpoint_exists(workdir, step: int):
    return lambda: (Path(workdir) / "checkpoints" / str(step)).is_dir()


def tmp_checkpoint(workdir) -> str | None:
    """Name of an orbax temporary (uncommitted) step folder, if one exists now."""
    try:
        names = os.listdir(Path(workdir) / "checkpoints")
    except FileNotFoundError:
        return None
    return next((n for n in names if "orbax-checkpoint-tmp" in n), None)


def restore(workdir, step: int | None = None):
    """(state, meta) of a run's checkpoint, restored in this process (no model compute)."""
    import jax

    from jaxdiff import checkpoint as ckpt_lib
    from jaxdiff import training

    config = ckpt_lib.load_config(workdir)
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    shapes = jax.eval_shape(lambda k: training.init_train_state(config, k)[2],
                            jax.random.key(0))
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
                            shapes)
    checkpointer = ckpt_lib.Checkpointer(workdir, max_to_keep=None, read_only=True)
    try:
        return checkpointer.restore(abstract, step)
    finally:
        checkpointer.close()


def host_leaves(state) -> dict[str, np.ndarray]:
    """{path: numpy array} for every leaf (typed PRNG keys as their key data)."""
    import jax

    def host(x):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x = jax.random.key_data(x)
        return np.asarray(x)

    return {jax.tree_util.keystr(p): host(x)
            for p, x in jax.tree_util.tree_leaves_with_path(state)}


def assert_bitwise_equal(state_a, state_b) -> None:
    a, b = host_leaves(state_a), host_leaves(state_b)
    assert sorted(a) == sorted(b)
    different = [k for k in a if a[k].dtype != b[k].dtype or a[k].shape != b[k].shape
                 or a[k].tobytes() != b[k].tobytes()]
    assert not different, f"{len(different)} of {len(a)} arrays differ, e.g. {different[:3]}"


def metrics(workdir) -> list[dict]:
    return [json.loads(line) for line in (Path(workdir) / "metrics.jsonl").read_text().splitlines()
            if line.strip()]


def losses(workdir) -> list[tuple[int, float]]:
    """(step, loss) per logged step; NaN losses kept as the string 'nan' so lists compare."""
    return [(r["step"], "nan" if math.isnan(r["loss"]) else r["loss"]) for r in metrics(workdir)]


_ROOT = Path(tempfile.mkdtemp(prefix="jaxdiff-tests-runs-"))
_STRAIGHT: list[Path] = []


def straight_run() -> Path:
    """The uninterrupted reference run (RUN settings), trained once per test session."""
    if not _STRAIGHT:
        workdir = _ROOT / "straight"
        result = run("train", workdir)
        assert result.returncode == 0, result.stderr[-3000:]
        _STRAIGHT.append(workdir)
    return _STRAIGHT[0]


def partial_save_in_progress(workdir) -> bool:
    """True while orbax is writing a step: its temporary folder already holds array files."""
    name = tmp_checkpoint(workdir)
    if name is None:
        return False
    folder = Path(workdir) / "checkpoints" / name
    return any("state" in root and files for root, _, files in os.walk(folder))
