"""A workdir that looks like a finished run, made without training (tests of commands that read
runs): the tiny config, its initial parameters as a checkpoint at step 0."""

from pathlib import Path

from helpers import tiny_config

from jaxdiff import checkpoint as ckpt_lib
from jaxdiff import training


def make_untrained_run(workdir, preset: str = "digits_cond", schedule: str | None = None) -> Path:
    workdir = Path(workdir)
    config = tiny_config(preset)
    if schedule is not None:
        config.diffusion.schedule = schedule
    _, _, state = training.init_train_state(config)
    ckpt_lib.save_config(workdir, config)
    checkpointer = ckpt_lib.Checkpointer(workdir)
    checkpointer.save(0, state, {"step": 0, "data_iterator": {}, "config": config.to_dict()})
    checkpointer.close()
    return workdir
