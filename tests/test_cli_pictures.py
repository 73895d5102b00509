"""`jaxdiff noise | sample --trajectory | plot` write PNGs of the sizes their layouts imply."""

import json

import numpy as np
import pytest
from PIL import Image
from untrained_run import make_untrained_run

from jaxdiff.cli import main

CELL = 48  # strips magnify images to at least 48 pixels wide (16 -> x3, 8 -> x6)
PAD, BAND = 2, 12  # padding between cells; caption band above each captioned cell


def png_size(path):
    with Image.open(path) as image:
        image.load()
        return image.size, image.mode


def strip_size(columns, rows, cell=CELL):
    """(width, height) of a captioned grid of square cells."""
    return columns * (cell + PAD) + PAD, rows * (cell + PAD + BAND) + PAD


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return make_untrained_run(tmp_path_factory.mktemp("run"), "digits_cond")


def test_noise_of_a_test_digit_writes_one_captioned_row_per_level(tmp_path, capsys):
    out = tmp_path / "strip.png"
    assert main(["noise", "--levels", "0,100,250,500,999", "--out", str(out)]) == 0
    assert png_size(out) == (strip_size(5, 1), "L")
    assert str(out) in capsys.readouterr().err


def test_noise_of_an_rgb_file_resizes_it_and_keeps_colour(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (30, 20, 3), dtype=np.uint8)).save(tmp_path / "in.png")
    out = tmp_path / "strip.png"
    assert main(["noise", "--image", str(tmp_path / "in.png"), "--levels", "0,999",
                 "--image_size", "8", "--schedule", "cosine", "--out", str(out)]) == 0
    assert png_size(out) == (strip_size(2, 1), "RGB")


def test_noise_at_level_zero_shows_the_image_itself(tmp_path):
    # t = 0 keeps sqrt(abar_0) = sqrt(1 - 1e-4) of the image and adds 0.01 of noise.
    image = np.zeros((16, 16), np.uint8)
    image[4:12, 4:12] = 255
    Image.fromarray(image).save(tmp_path / "in.png")
    out = tmp_path / "strip.png"
    assert main(["noise", "--image", str(tmp_path / "in.png"), "--levels", "0",
                 "--out", str(out)]) == 0
    cell = np.asarray(Image.open(out))[PAD + BAND:PAD + BAND + CELL, PAD:PAD + CELL]
    expected = np.kron(image, np.ones((3, 3))).astype(np.float64)
    assert np.abs(cell - expected).max() <= 255 * 0.05


@pytest.mark.parametrize("args, message", [
    (["--levels", "0,1000"], "[0, 1000)"),
    (["--levels", "a,b"], "comma-separated integers"),
    (["--schedule", "quadratic"], "unknown schedule 'quadratic'"),
    (["--image", "missing.png"], "not found"),
    (["--out", "strip.jpg"], "must end with .png"),
])
def test_noise_bad_input_exits_2_with_a_message(tmp_path, capsys, args, message):
    assert main(["noise", "--out", str(tmp_path / "s.png"), *args]) == 2
    assert message in capsys.readouterr().err


def test_plot_draws_one_panel_per_logged_metric(tmp_path):
    records = [{"step": step, "loss": 1.0 / step, "grad_norm": 2.0} for step in range(10, 60, 10)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert main(["plot", "--workdir", str(tmp_path)]) == 0
    # Two of the default keys are present: a (5 * 2) x 3.5 inch figure at 100 dpi.
    assert png_size(tmp_path / "metrics.png")[0] == (1000, 350)


def test_plot_without_metrics_exits_2(tmp_path, capsys):
    assert main(["plot", "--workdir", str(tmp_path)]) == 2
    assert "metrics.jsonl" in capsys.readouterr().err


def test_sample_trajectory_writes_the_denoising_strip_beside_a_labelled_grid(run, tmp_path):
    out = tmp_path / "grid.png"
    assert main(["sample", "--workdir", str(run), "--num", "3", "--steps", "4",
                 "--trajectory", "--every", "2", "--out", str(out)]) == 0
    # Grid: 3 images on 2 columns and 2 rows, each cell captioned with its class.
    assert png_size(out)[0] == (2 * (16 + PAD) + PAD, 2 * (16 + PAD + BAND) + PAD)
    # Strip: steps 0, 2 and the last (3) as columns; per image a row of x_t and one of x0.
    assert png_size(tmp_path / "grid_trajectory.png")[0] == strip_size(3, 2 * 3)
