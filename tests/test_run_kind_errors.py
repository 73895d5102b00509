"""A command given a run of another kind (config.task) refuses it up front, exit 2, naming the
run's kind and the command that does work on it, and writes nothing: sample, eval, export and
distill take pixel diffusion runs, txt2img --workdir text-to-image runs, reconstruct autoencoder
runs."""

from __future__ import annotations

import pytest
from test_text_to_image_training import _t2i_config, _vae_config, captioned_folder  # noqa: F401
from untrained_run import make_untrained_run

from jaxdiff import trainer
from jaxdiff.cli import main


@pytest.fixture(scope="module")
def runs(captioned_folder, tmp_path_factory):  # noqa: F811
    """One tiny finished run of each kind, trained for two steps (the pixel one is untrained)."""
    root = tmp_path_factory.mktemp("kinds")
    vae, t2i = root / "vae", root / "t2i"
    trainer.train(_vae_config(captioned_folder, steps=2), vae, write_samples=False, verbose=False)
    trainer.train(_t2i_config(captioned_folder, vae, 2), t2i, write_samples=False, verbose=False)
    return {"pixel_diffusion": make_untrained_run(root / "pixel", "digits"),
            "autoencoder": vae, "text_to_image": t2i}


# The kind of run each command takes, and how it is called (OUT: a path it would write).
COMMANDS = {
    "sample": ("pixel_diffusion", ["sample", "--num", "2", "--out", "OUT.png"]),
    "eval": ("pixel_diffusion", ["eval", "--num", "8"]),
    "export": ("pixel_diffusion", ["export", "--out", "OUT"]),
    "distill": ("pixel_diffusion", ["distill", "--out", "OUT"]),
    "txt2img": ("text_to_image", ["txt2img", "--prompt", "a red circle", "--out", "OUT.png"]),
    "reconstruct": ("autoencoder", ["reconstruct", "--num", "4", "--out", "OUT.png"]),
}
# What the message names for a run of each kind, and the command it suggests.
KIND_WORDS = {"pixel_diffusion": ("is a pixel_diffusion run", "`jaxdiff sample --workdir {w}`"),
              "autoencoder": ("is an autoencoder run", "`jaxdiff reconstruct --workdir {w}`"),
              "text_to_image": ("is a text_to_image run", "`jaxdiff txt2img --workdir {w} ")}
CASES = [(command, kind) for command, (takes, _) in COMMANDS.items() for kind in KIND_WORDS
         if kind != takes]


@pytest.mark.parametrize("command, kind", CASES)
def test_a_command_refuses_a_run_of_another_kind(runs, tmp_path, capsys, command, kind):
    takes, argv = COMMANDS[command]
    workdir = runs[kind]
    out = tmp_path / "OUT"
    argv = [arg.replace("OUT", str(out)) for arg in argv]
    assert main([argv[0], "--workdir", str(workdir), *argv[1:]]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1, err
    names_kind, suggests = KIND_WORDS[kind]
    assert err.startswith(f"jaxdiff {command}: error: {str(workdir)!r} {names_kind}"), err
    assert f"not {'an' if takes == 'autoencoder' else 'a'} {takes} run" in err, err
    assert suggests.format(w=workdir) in err, err
    assert not list(tmp_path.iterdir()), "a refused command wrote something"


def test_reconstruct_still_takes_an_autoencoder_run(runs, tmp_path, capsys):
    out = tmp_path / "recon.png"
    assert main(["reconstruct", "--workdir", str(runs["autoencoder"]), "--num", "4",
                 "--out", str(out)]) == 0
    assert "reconstruction PSNR" in capsys.readouterr().out and out.is_file()
