"""The frozen autoencoder of a latent run and the dataset's latents, computed once per start.

`load_autoencoder(path, step)` restores a stage-1 run (config.task "autoencoder"): its EMA
parameters at `step` (default: the latest checkpoint). `encode_split` encodes a whole split to
the posterior's mean and log-variance, in memory: the latent run draws z = mean + std * noise
from them at every step (a fresh draw per step, as Stable Diffusion trains) without running the
encoder again. The cache lives in host memory for the run's lifetime and is recomputed, to the
same numbers, when the run resumes (the autoencoder step used is recorded in
`<workdir>/latent.json`, so a resumed run encodes with the same parameters even if the
autoencoder run trained on).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff.validation import InputError, InputFileNotFoundError

LATENT_FILE = "latent.json"


@dataclasses.dataclass(frozen=True)
class Autoencoder:
    """A restored stage-1 run: path, step, config, graphdef and EMA params."""

    path: str
    step: int
    config: Any
    graphdef: Any
    params: Any

    @property
    def factor(self) -> int:
        return 2 ** (len(self.config.model.block_out_channels) - 1)

    @property
    def latent_channels(self) -> int:
        return int(self.config.model.latent_channels)


def check_autoencoder_run(path):
    """(run folder, saved config) of the trained autoencoder run at `path`, checked before
    anything is built; the errors tell how to set --config.latent.autoencoder."""
    from jaxdiff import checkpoint as ckpt_lib

    hint = ("set --config.latent.autoencoder=RUN_DIR to the workdir of a finished stage-1 run "
            "(`jaxdiff train --config shapes_vae --workdir RUN_DIR`)")
    if path is None:
        raise InputError(f"latent.autoencoder is not set: {hint}")
    run = Path(path)
    if not run.is_dir():
        raise InputFileNotFoundError(f"latent.autoencoder={str(path)!r} is not a folder; {hint}")
    if not (run / ckpt_lib.CONFIG_FILE).is_file():
        raise InputError(f"latent.autoencoder={str(path)!r} is not a jaxdiff run (no "
                         f"{ckpt_lib.CONFIG_FILE}); {hint}")
    config = ckpt_lib.load_config(run)
    if config.task != "autoencoder":
        raise InputError(f"latent.autoencoder={str(path)!r} is a {config.task!r} run (preset "
                         f"{config.preset!r}), not an autoencoder; {hint}")
    from jaxdiff.trainer import saved_steps

    if not saved_steps(run):
        raise InputError(f"latent.autoencoder={str(path)!r} has no checkpoint yet; {hint}")
    return run, config


def load_autoencoder(path, step: int | None = None) -> Autoencoder:
    """Restores the EMA parameters of the autoencoder run at `path` (latest step by default)."""
    run, config = check_autoencoder_run(path)
    return restore_autoencoder(run, config, step, missing_step_hint=(
        "the latent run was started with that step: restore it, or start a new latent run"))


def restore_autoencoder(run: Path, config, step: int | None = None, *,
                        missing_step_hint: str = "choose one of those") -> Autoencoder:
    """The EMA parameters of an autoencoder run already checked (its folder and saved config):
    `load_autoencoder` for stage 2, `jaxdiff reconstruct` after its own run checks."""
    from jaxdiff import checkpoint as ckpt_lib
    from jaxdiff.tasks.autoencoder import AutoencoderTask

    task = AutoencoderTask(config)
    built = {}

    def make_state(key):
        graphdef, _, state = task.init_train_state(config, key)
        built["graphdef"] = graphdef
        return state

    abstract = jax.eval_shape(make_state, jax.random.key(0))
    with ckpt_lib.Checkpointer(run, max_to_keep=None, read_only=True) as checkpointer:
        if step is not None and step not in checkpointer.all_steps():
            raise InputError(f"autoencoder run {str(run)!r} has no checkpoint at step {step} "
                             f"(it has {checkpointer.all_steps()}); {missing_step_hint}")
        state, _ = checkpointer.restore(ckpt_lib.abstract_like(abstract), step)
    return Autoencoder(str(run), int(state.step), config, built["graphdef"], state.ema_params)


def encode_split(autoencoder: Autoencoder, images: np.ndarray, batch_size: int = 500
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(mean, logvar), float32 (N, h, w, latent_channels), of images (N, H, W, C) in [-1, 1]."""
    from jaxdiff.models.autoencoder import encode

    means, logvars = [], []
    for start in range(0, len(images), batch_size):
        chunk = images[start:start + batch_size]
        pad = batch_size - len(chunk)  # one compiled shape for every chunk
        mean, logvar = encode(autoencoder.graphdef, autoencoder.params,
                              jnp.asarray(np.pad(chunk, ((0, pad), (0, 0), (0, 0), (0, 0)))))
        means.append(np.asarray(mean)[:len(chunk)])
        logvars.append(np.asarray(logvar)[:len(chunk)])
    return np.concatenate(means), np.concatenate(logvars)


def latent_scaling_factor(mean: np.ndarray, logvar: np.ndarray) -> float:
    """1 / std of the posterior draws z = mean + exp(logvar / 2) eps over the whole split and
    every element, in closed form: Var z = Var(mean) + E[exp(logvar)] (float64)."""
    mean = mean.astype(np.float64)
    variance = mean.var() + np.exp(logvar.astype(np.float64)).mean()
    return float(1.0 / np.sqrt(variance))


def read_latent_record(workdir) -> dict | None:
    path = Path(workdir) / LATENT_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def write_latent_record(workdir, record: dict) -> None:
    from jaxdiff.atomic_file import atomic_write

    with atomic_write(Path(workdir) / LATENT_FILE, "w") as handle:
        handle.write(json.dumps(record, indent=2))
