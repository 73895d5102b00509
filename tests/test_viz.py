"""Pictures: sizes of grids and strips, PNGs that read back, labels, and clear errors."""

import json

import jax
import numpy as np
import pytest
from PIL import Image

from jaxdiff import viz
from jaxdiff.schedules import make_schedule


def _images(n, h=8, w=8, c=1, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (n, h, w, c)).astype(np.float32)


def test_image_grid_has_expected_size_and_places_pixels():
    x = _images(5, 8, 6, 3)
    grid = viz.image_grid(x, nrow=3, padding=2, upscale=2)
    # 3 columns of 12 px, 2 rows of 16 px, 2 px padding around and between.
    assert grid.shape == (2 * (16 + 2) + 2, 3 * (12 + 2) + 2, 3)
    assert grid.dtype == np.uint8
    expected = np.round((np.clip(x[4], -1, 1) + 1) * 127.5).astype(np.uint8)
    cell = grid[2 + 18:2 + 18 + 16, 2 + 14:2 + 14 + 12]  # image 4: row 1, column 1
    np.testing.assert_array_equal(cell, expected.repeat(2, 0).repeat(2, 1))


def test_image_grid_default_nrow_is_ceil_sqrt():
    assert viz.image_grid(_images(10), padding=0).shape == (3 * 8, 4 * 8, 1)


def test_image_grid_labels_add_a_caption_band_with_ink():
    x = -np.ones((2, 16, 16, 1), np.float32)
    plain = viz.image_grid(x, nrow=2, upscale=3)
    labelled = viz.image_grid(x, nrow=2, upscale=3, labels=["7", "t=42"])
    assert labelled.shape == (plain.shape[0] + 12, plain.shape[1], 1)
    band = labelled[2:14, 2:50, 0]  # above the first cell: white band with black text
    assert band.max() == 255 and band.min() < 128


def test_image_grid_rejects_wrong_number_of_labels():
    with pytest.raises(ValueError, match="one entry per image"):
        viz.image_grid(_images(3), labels=["a"])


@pytest.mark.parametrize("bad, error, match", [
    (np.zeros((8, 8, 1), np.float32), ValueError, "rank 4"),
    (np.zeros((2, 8, 8, 1), np.uint8), TypeError, "floating point"),
    (np.full((2, 8, 8, 1), np.nan, np.float32), ValueError, "NaN"),
    (np.zeros((2, 8, 8, 2), np.float32), ValueError, "channels"),
])
def test_image_grid_rejects_bad_images(bad, error, match):
    with pytest.raises(error, match=match):
        viz.image_grid(bad)


def test_save_png_writes_a_readable_png_in_new_folders(tmp_path):
    grid = viz.image_grid(_images(4, c=3), nrow=2)
    path = viz.save_png(grid, tmp_path / "a" / "b" / "grid.png")
    with Image.open(path) as img:
        np.testing.assert_array_equal(np.asarray(img), grid)
    assert [p.name for p in path.parent.iterdir()] == ["grid.png"]  # no temp file left


def test_save_png_grayscale_channel_round_trips(tmp_path):
    grid = viz.image_grid(_images(4), nrow=2)
    with Image.open(viz.save_png(grid, tmp_path / "g.png")) as img:
        assert img.mode == "L"
        np.testing.assert_array_equal(np.asarray(img), grid[..., 0])


@pytest.mark.parametrize("bad, error", [(np.zeros((4, 4), np.float32), TypeError),
                                        (np.zeros((4, 4, 2), np.uint8), ValueError),
                                        (np.zeros((1, 4, 4, 3), np.uint8), ValueError)])
def test_save_png_rejects_bad_arrays(tmp_path, bad, error):
    with pytest.raises(error):
        viz.save_png(bad, tmp_path / "x.png")


def test_noising_strip_shows_one_captioned_cell_per_level():
    schedule = make_schedule("linear", 1000)
    image = _images(1, 16, 16, 1)[0]
    strip = viz.noising_strip(image, [0, 250, 999], schedule, jax.random.key(0), upscale=3)
    assert strip.shape == (2 + 12 + 48 + 2, 3 * (48 + 2) + 2, 1)
    # At t=0 the cell is almost the clean image: sqrt(abar_0) x0 + 0.01 eps.
    cell = strip[14:62, 2:50, 0].astype(np.float32) / 127.5 - 1
    np.testing.assert_allclose(cell[::3, ::3], image[..., 0], atol=0.05)


def test_noising_strip_rejects_batches_and_bad_levels():
    schedule = make_schedule("linear", 100)
    with pytest.raises(ValueError, match="one image"):
        viz.noising_strip(_images(2), [0], schedule, jax.random.key(0))
    with pytest.raises(ValueError, match="levels"):
        viz.noising_strip(_images(1), [0.5], schedule, jax.random.key(0))


def test_denoising_strip_has_two_rows_per_sample_and_every_kth_step():
    S, B = 10, 3
    trajectory = {"x_t": np.zeros((S, B, 8, 8, 1), np.float32),
                  "pred_x0": np.zeros((S, B, 8, 8, 1), np.float32),
                  "timesteps": np.arange(S)[::-1] * 100}
    strip = viz.denoising_strip(trajectory, every_k=4, num_samples=2, upscale=6)
    # Steps 0, 4, 8 and the last (9): 4 columns of 48 px; 4 rows of 48 + 12 caption px.
    assert strip.shape == (4 * (48 + 2 + 12) + 2, 4 * (48 + 2) + 2, 1)


def test_denoising_strip_rejects_inconsistent_trajectory():
    bad = {"x_t": np.zeros((3, 1, 8, 8, 1)), "pred_x0": np.zeros((2, 1, 8, 8, 1)),
           "timesteps": np.arange(3)}
    with pytest.raises(ValueError, match="of one shape"):
        viz.denoising_strip(bad)
    with pytest.raises(ValueError, match="keys"):
        viz.denoising_strip({"x_t": np.zeros((3, 1, 8, 8, 1))})


def test_plot_metrics_writes_png_of_figure_size(tmp_path):
    log = tmp_path / "metrics.jsonl"
    lines = [{"step": s, "loss": 1.0 / (s + 1), "grad_norm": 2.0} for s in range(0, 200, 10)]
    lines.insert(3, {"step": 25, "eval_fd": 1.5})  # a line without the plotted keys
    log.write_text("\n".join(json.dumps(r) for r in lines) + "\n")
    viz.plot_metrics(log, tmp_path / "plots" / "m.png", keys=("loss", "grad_norm"))
    with Image.open(tmp_path / "plots" / "m.png") as img:
        assert img.size == (1000, 350)  # 2 panels x 5 in x 100 dpi, 3.5 in high


def test_plot_metrics_without_matching_keys_raises(tmp_path):
    log = tmp_path / "metrics.jsonl"
    log.write_text(json.dumps({"step": 0, "loss": 1.0}) + "\n")
    with pytest.raises(ValueError, match="any of"):
        viz.plot_metrics(log, tmp_path / "m.png", keys=("accuracy",))


def test_schedule_snr_plot_writes_png(tmp_path):
    schedules = {name: make_schedule(name, 100) for name in ("linear", "cosine")}
    viz.schedule_snr_plot(schedules, tmp_path / "snr.png")
    with Image.open(tmp_path / "snr.png") as img:
        assert img.size == (1000, 350)
