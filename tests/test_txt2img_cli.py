"""`jaxdiff txt2img` end to end on the tiny random Stable Diffusion folder, and its input errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from sd_pipeline_cache import tiny_pipeline
from test_txt2img_parity import LATENTS, NEGATIVE, PROMPTS, SIZE, STEPS, diffusers_images

from jaxdiff.cli import main


def txt2img(*args) -> int:
    return main(["txt2img", "--pretrained", str(tiny_pipeline("sd1")), *map(str, args)])


def test_cli_writes_grid_and_npz_equal_to_diffusers(tmp_path, capsys):
    prompts_file = tmp_path / "prompts.txt"
    prompts_file.write_text("\n".join(PROMPTS) + "\n\n")  # blank lines are skipped
    np.save(tmp_path / "latents.npy", LATENTS)
    out, npz = tmp_path / "grid.png", tmp_path / "images.npz"
    assert txt2img("--prompts_file", prompts_file, "--negative_prompt", NEGATIVE, "--method",
                   "ddim", "--steps", STEPS, "--guidance", 7.5, "--height", SIZE, "--width", SIZE,
                   "--latents", tmp_path / "latents.npy", "--out", out, "--npz", npz) == 0
    with np.load(npz, allow_pickle=False) as saved:
        images, prompts = saved["images"], saved["prompts"]
    assert prompts.dtype.kind == "U" and prompts.tolist() == PROMPTS
    want = diffusers_images(tiny_pipeline("sd1"), "ddim", tuple(PROMPTS), NEGATIVE, 7.5)
    np.testing.assert_allclose(images, want, atol=1e-4, rtol=0)
    grid = np.asarray(Image.open(out))
    assert grid.ndim == 3 and grid.shape[2] == 3 and grid.shape[1] > 2 * SIZE
    assert "ddim" in capsys.readouterr().err


def test_cli_pndm_folder_uses_dpmpp_2m_and_says_so_in_bfloat16(tmp_path, capsys):
    npz = tmp_path / "images.npz"
    assert txt2img("--prompt", "a cat", "--num", 3, "--batch", 2, "--steps", STEPS, "--height", SIZE,
                   "--width", SIZE, "--dtype", "bfloat16", "--out", tmp_path / "g.png",
                   "--npz", npz) == 0
    err = capsys.readouterr().err
    assert "PNDMScheduler" in err and "dpmpp_2m" in err
    with np.load(npz) as saved:
        assert saved["images"].shape == (3, SIZE, SIZE, 3)
        assert np.all(np.isfinite(saved["images"])) and np.abs(saved["images"]).max() <= 1
        assert saved["prompts"].tolist() == ["a cat"] * 3


def _error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    return err


def test_folder_that_is_not_a_pipeline_exits_2(tmp_path, capsys):
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "DDPMPipeline",
                                                           "unet": ["diffusers", "UNet2DModel"]}))
    assert main(["txt2img", "--pretrained", str(tmp_path), "--prompt", "x"]) == 2
    assert "not a Stable Diffusion pipeline folder" in _error(capsys)


@pytest.mark.parametrize("args,message", [
    (["--latents", "BAD_SHAPE", "--num", 2], "latents must have shape (2, 8, 8, 4)"),
    (["--latents", "BAD_DTYPE"], "latents must be a float array"),
    (["--height", 36], "height must be a positive multiple of 8"),
    (["--width", 0], "width must be a positive multiple of 8"),
])
def test_bad_latents_or_size_exit_2_before_generating(tmp_path, capsys, args, message):
    np.save(tmp_path / "BAD_SHAPE.npy", np.zeros((2, 4, 8, 8), np.float32))  # NCHW by mistake
    np.save(tmp_path / "BAD_DTYPE.npy", np.zeros((1, 8, 8, 4), np.int32))
    args = [str(tmp_path / f"{a}.npy") if a in ("BAD_SHAPE", "BAD_DTYPE") else a for a in args]
    assert txt2img("--prompt", "x", "--height", SIZE, "--width", SIZE, *args,
                   "--out", tmp_path / "g.png") == 2
    assert message in _error(capsys)


def test_empty_prompts_file_exits_2(tmp_path, capsys):
    (tmp_path / "p.txt").write_text("\n  \n")
    assert txt2img("--prompts_file", tmp_path / "p.txt") == 2
    assert "has no prompts" in _error(capsys)
