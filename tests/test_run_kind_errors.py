"""Commands for pixel runs refuse autoencoder and text-to-image runs up front (exit 2), naming the
kind of run and the command that does work on it, before anything is restored or compiled."""

from __future__ import annotations

import pytest

from jaxdiff import checkpoint as ckpt_lib
from jaxdiff.cli import main
from jaxdiff.configs import get_config


def saved_run(tmp_path, preset):
    workdir = tmp_path / preset
    config = get_config(preset)
    if preset == "shapes_t2i":
        config.latent.autoencoder = str(tmp_path / "shapes_vae")
    ckpt_lib.save_config(workdir, config)
    return str(workdir)


COMMANDS = {
    "sample": lambda w, tmp: ["sample", "--workdir", w, "--out", str(tmp / "s.png")],
    "eval": lambda w, tmp: ["eval", "--workdir", w, "--num", "8"],
    "export": lambda w, tmp: ["export", "--workdir", w, "--out", str(tmp / "exported")],
    "distill": lambda w, tmp: ["distill", "--workdir", w, "--out", str(tmp / "student")],
}
HINTS = {"shapes_t2i": ("text_to_image run", "jaxdiff txt2img --workdir"),
         "shapes_vae": ("autoencoder run", "jaxdiff reconstruct --workdir")}


@pytest.mark.parametrize("preset", sorted(HINTS))
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_pixel_commands_refuse_other_run_kinds(tmp_path, capsys, preset, command):
    workdir = saved_run(tmp_path, preset)
    assert main(COMMANDS[command](workdir, tmp_path)) == 2
    err = capsys.readouterr().err
    kind, hint = HINTS[preset]
    assert kind in err and f"{hint} {workdir}" in err, err
    assert "Traceback" not in err
    assert not (tmp_path / "exported").exists() and not (tmp_path / "student").exists()


def test_txt2img_and_reconstruct_refuse_a_pixel_run(tmp_path, capsys):
    workdir = saved_run(tmp_path, "digits")
    assert main(["txt2img", "--workdir", workdir, "--prompt", "a red circle"]) == 2
    assert "text-to-image run" in capsys.readouterr().err
    assert main(["reconstruct", "--workdir", workdir]) == 2
    assert "autoencoder" in capsys.readouterr().err
