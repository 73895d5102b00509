"""Which commands take which kind of run (`config.task`), and the one place a command opens a
run's config and refuses a run of another kind, before anything is restored or compiled.

A run handed to the wrong command would otherwise fail deep inside restoring (a parameter tree
of another network) with a message that names neither the run's kind nor the right command.
"""

from __future__ import annotations

from jaxdiff.validation import InputError

# What to do with a run of each task instead; {w} is the run's folder.
COMMANDS_FOR_TASK = {
    "pixel_diffusion": ("sample from it with `jaxdiff sample --workdir {w}` (or evaluate, "
                        "export or distill it with `jaxdiff eval`, `export`, `distill`)"),
    "text_to_image": "generate from it with `jaxdiff txt2img --workdir {w} --prompt \"a red circle\"`",
    "autoencoder": ("look at its reconstructions with `jaxdiff reconstruct --workdir {w}`, or train "
                    "a text-to-image model on its latents with `jaxdiff train --config shapes_t2i "
                    "--config.latent.autoencoder={w}`"),
}


def check_run_task(config, workdir, task: str) -> None:
    """Raises InputError, naming the run's kind and the command that works on it, unless the
    run in `workdir` (whose saved config is `config`) was trained for `task`."""
    if config.task == task:
        return
    hint = COMMANDS_FOR_TASK.get(config.task)
    raise InputError(f"{str(workdir)!r} is {_a(config.task)} run (config.task, preset "
                     f"{config.preset!r}), not {_a(task)} run"
                     + (f"; {hint.format(w=workdir)}" if hint else ""))


def _a(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def open_run(workdir, task: str):
    """(workdir as an absolute path, saved config) of a run of `task`; InputError for a missing
    folder or a run of another task."""
    from jaxdiff import checkpoint as ckpt_lib

    workdir = ckpt_lib.run_path(workdir)
    config = ckpt_lib.load_config(workdir)
    check_run_task(config, workdir, task)
    return workdir, config
