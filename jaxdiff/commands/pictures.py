"""Pictures for `jaxdiff noise | sample --trajectory | plot`: PNG files of what the model does.

- `noise_strip_picture`: one image at several noise levels of q(x_t | x_0) (the forward process).
- `trajectory_picture`: x_t and the predicted x_0 along a sampling run (the reverse process).
- `plot_run`: training loss and metrics over steps from `<workdir>/metrics.jsonl`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from jaxdiff.validation import InputError, InputFileNotFoundError

#: Images shown per trajectory picture (two rows each: x_t and predicted x_0).
TRAJECTORY_SAMPLES = 4
#: A trajectory picture shows about this many steps by default.
TRAJECTORY_COLUMNS = 10
DEFAULT_PLOT_KEYS = ("loss", "grad_norm", "learning_rate", "steps_per_sec")


def parse_int_list(text: str, what: str) -> list[int]:
    """"0,100,250" -> [0, 100, 250]; ValueError naming `what` otherwise."""
    try:
        values = [int(part) for part in str(text).split(",") if part.strip()]
    except ValueError:
        values = []
    if not values:
        raise InputError(f"{what} must be comma-separated integers like 0,100,500; got {text!r}")
    return values


def load_image(path, image_size: int, channels: int | None = None) -> np.ndarray:
    """A PNG/JPEG file as float32 (image_size, image_size, C) in [-1, 1] (centre crop + resize).

    Args:
      path: image file.
      image_size: output side.
      channels: 1 (grayscale) or 3 (RGB); default: 1 for grayscale files, else 3.
    """
    from PIL import Image, UnidentifiedImageError

    from jaxdiff.data.transforms import center_crop_resize, to_float

    path = Path(path)
    if not path.is_file():
        raise InputFileNotFoundError(f"image {str(path)!r} not found")
    try:
        with Image.open(path) as img:
            if channels is None:
                channels = 1 if img.mode in ("1", "L", "LA", "I", "I;16", "F") else 3
            if channels not in (1, 3):
                raise InputError(f"channels must be 1 or 3; got {channels!r}")
            pixels = np.asarray(img.convert("L" if channels == 1 else "RGB"), np.uint8)
    except UnidentifiedImageError:
        raise InputError(f"{str(path)!r} is not an image file Pillow can read") from None
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    return center_crop_resize(to_float(pixels), image_size)


def default_digit(image_size: int = 16, index: int = 0) -> np.ndarray:
    """Test-split digit number `index` as float32 (image_size, image_size, 1) in [-1, 1]."""
    from jaxdiff.data.digits_arrays import digits_split

    images, _ = digits_split("test", image_size)
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) \
            or not 0 <= index < images.shape[0]:
        raise InputError(f"--index must be in [0, {images.shape[0]}); got {index!r}")
    return images[index]


def noise_strip_picture(image: np.ndarray, levels: Sequence[int], *, schedule: str = "linear",
                        num_timesteps: int = 1000, seed: int = 0,
                        upscale: int | None = None) -> np.ndarray:
    """uint8 strip of `image` (H, W, C) noised to each timestep in `levels` (one noise draw).

    Levels must lie in [0, num_timesteps); see `jaxdiff.viz.noising_strip` for the layout.
    """
    import jax

    from jaxdiff.schedules import make_schedule
    from jaxdiff.viz import noising_strip

    sched = make_schedule(schedule, num_timesteps)
    levels = list(levels)
    bad = [v for v in levels if not 0 <= v < num_timesteps]
    if bad:
        raise InputError(f"noise levels must be timesteps in [0, {num_timesteps}); got {bad}")
    return noising_strip(image, levels, sched, jax.random.key(seed), upscale=upscale)


def default_every(num_steps: int) -> int:
    """Show about TRAJECTORY_COLUMNS steps of a num_steps-step run."""
    return max(1, round(num_steps / TRAJECTORY_COLUMNS))


def trajectory_path(grid_path) -> Path:
    """Where the denoising strip goes: next to the grid, `<name>_trajectory.png`."""
    grid_path = Path(grid_path)
    return grid_path.with_name(grid_path.stem + "_trajectory.png")


def trajectory_picture(trajectory: dict, every: int | None = None,
                       num_samples: int = TRAJECTORY_SAMPLES) -> np.ndarray:
    """uint8 denoising strip of a sampler trajectory (see `jaxdiff.viz.denoising_strip`)."""
    from jaxdiff.viz import denoising_strip

    steps = int(np.asarray(trajectory["timesteps"]).shape[0])
    every = default_every(steps) if every is None else every
    batch = int(np.asarray(trajectory["x_t"]).shape[1])
    return denoising_strip(trajectory, every_k=every, num_samples=min(num_samples, batch))


def plot_run(workdir, out=None, keys: Sequence[str] = DEFAULT_PLOT_KEYS,
             smoothing: float = 0.9) -> Path:
    """Plots `<workdir>/metrics.jsonl` (loss etc. over steps) to `out` (default
    `<workdir>/metrics.png`); returns the path written."""
    from jaxdiff.viz import plot_metrics

    log = Path(workdir) / "metrics.jsonl"
    if not log.is_file():
        raise InputFileNotFoundError(
            f"{str(log)!r} not found: is {str(workdir)!r} a jaxdiff workdir "
            f"that has logged at least one interval (train.log_every)?")
    out = Path(out) if out is not None else Path(workdir) / "metrics.png"
    plot_metrics(log, out, keys=tuple(keys), smoothing=smoothing)
    return out
