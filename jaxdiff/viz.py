"""Pictures: image grids, noising strips, denoising trajectories, training curves (PNG).

Grids and strips use numpy and Pillow only and return uint8 arrays (H, W, C); `save_png` writes
them. Plots (`plot_metrics`, `schedule_snr_plot`) import matplotlib lazily and draw on a
`matplotlib.figure.Figure` with the Agg canvas, never touching pyplot's global state.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from jaxdiff.atomic_file import atomic_write
from jaxdiff.validation import InputError, InputTypeError

_LABEL_HEIGHT = 12  # pixels of the caption band above each cell
_MIN_CELL = 48  # strips upscale small images to at least this width, so captions fit


def _check_images(images, what: str = "images") -> np.ndarray:
    """NHWC float, finite, C in {1, 3, 4}; returns float32 numpy."""
    from jaxdiff.validation import check_images

    check_images(images, what)
    shape = images.shape
    if shape[-1] not in (1, 3, 4):
        raise InputError(f"{what} must have 1, 3 or 4 channels; got shape {tuple(shape)}")
    if shape[0] < 1:
        raise InputError(f"{what} must hold at least one image; got shape {tuple(shape)}")
    x = np.asarray(images, dtype=np.float32)
    if not np.all(np.isfinite(x)):
        raise InputError(f"{what} contain NaN or infinite values")
    return x


def to_uint8(images) -> np.ndarray:
    """[-1, 1] floats -> uint8 [0, 255] (clipped, rounded), same shape."""
    x = np.clip(np.asarray(images, dtype=np.float32), -1.0, 1.0)
    return np.round((x + 1.0) * 127.5).astype(np.uint8)


def _font(size: int = 10):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no size argument
        return ImageFont.load_default()


def image_grid(images, nrow: int | None = None, padding: int = 2, upscale: int = 1,
               labels: Sequence | None = None, pad_value: float = 1.0) -> np.ndarray:
    """Tiles images into one picture, optionally with a caption above each cell.

    Args:
      images: (N, H, W, C) float in [-1, 1] (values outside are clipped), C in {1, 3, 4}.
      nrow: images per row; default ceil(sqrt(N)).
      padding: pixels between cells and around the border.
      upscale: integer nearest-neighbour magnification of each image.
      labels: optional N captions (anything `str` accepts), drawn in a band above each cell.
      pad_value: colour of the padding and caption bands in [-1, 1] (1 = white).

    Returns:
      uint8 array (H_out, W_out, C) with W_out = ncol * (W * upscale + padding) + padding and
      H_out = nrows * (H * upscale + padding + band) + padding, band = 12 with labels, else 0.

    Example:
      >>> image_grid(np.zeros((6, 8, 8, 1), np.float32), nrow=3).shape
      (22, 32, 1)
    """
    x = _check_images(images)
    n, h, w, c = x.shape
    from jaxdiff.validation import check_int
    nrow = check_int(nrow if nrow is not None else math.ceil(math.sqrt(n)), "nrow")
    padding = check_int(padding, "padding", 0)
    upscale = check_int(upscale, "upscale")
    if labels is not None and len(labels) != n:
        raise InputError(f"labels must have one entry per image ({n}); got {len(labels)}")
    cells = to_uint8(x)
    if upscale > 1:
        cells = cells.repeat(upscale, axis=1).repeat(upscale, axis=2)
        h, w = h * upscale, w * upscale
    band = _LABEL_HEIGHT if labels is not None else 0
    ncol, nrows = min(nrow, n), math.ceil(n / nrow)
    fill = int(to_uint8(np.float32(pad_value)))
    out = np.full((nrows * (h + padding + band) + padding, ncol * (w + padding) + padding, c),
                  fill, np.uint8)
    for i in range(n):
        top = padding + (i // nrow) * (h + padding + band) + band
        left = padding + (i % nrow) * (w + padding)
        out[top:top + h, left:left + w] = cells[i]
    if labels is not None:
        out = _draw_labels(out, labels, nrow, h, w, padding, band, fill)
    return out


def _draw_labels(out, labels, nrow, h, w, padding, band, fill) -> np.ndarray:
    from PIL import Image, ImageDraw

    c = out.shape[-1]
    img = Image.fromarray(out[..., 0] if c == 1 else out)
    draw = ImageDraw.Draw(img)
    ink = 0 if fill >= 128 else 255
    ink = {1: ink, 3: (ink,) * 3, 4: (ink, ink, ink, 255)}[c]
    font = _font()
    for i, text in enumerate(labels):
        top = padding + (i // nrow) * (h + padding + band)
        left = padding + (i % nrow) * (w + padding)
        draw.text((left + 1, top), str(text), fill=ink, font=font)
    array = np.asarray(img)
    return array[..., None] if c == 1 else array


def save_png(array, path) -> Path:
    """Writes a uint8 picture (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) as PNG, atomically.

    Parent folders are created; the file appears complete or not at all (temp file + rename).

    Returns:
      The path written.
    """
    from PIL import Image

    a = np.asarray(array)
    if a.dtype != np.uint8:
        raise InputTypeError(f"save_png takes uint8 pixels (see image_grid / to_uint8); got dtype "
                             f"{a.dtype}")
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[-1] in (3, 4))):
        raise InputError(f"save_png takes an array (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); "
                         f"got shape {np.asarray(array).shape}")
    path = Path(path)
    with atomic_write(path) as f:
        Image.fromarray(a).save(f, format="PNG")
    return path


def _auto_upscale(width: int, upscale: int | None) -> int:
    return max(1, math.ceil(_MIN_CELL / width)) if upscale is None else upscale


def noising_strip(image, levels: Sequence[int], schedule, key, upscale: int | None = None,
                  padding: int = 2) -> np.ndarray:
    """x_t ~ q(x_t | x_0) at the given timesteps, side by side, captioned "t=<level>".

    The same noise draw is used at every level, so the strip shows one image fading into it.

    Args:
      image: one image (H, W, C) or (1, H, W, C), float in [-1, 1].
      levels: timesteps in [0, T).
      schedule: a `NoiseSchedule`.
      key: typed `jax.random.key` for the noise.
      upscale: magnification; default makes cells at least 48 pixels wide.

    Returns:
      uint8 (H_out, W_out, C), one row of len(levels) captioned cells.
    """
    import jax
    import jax.numpy as jnp

    from jaxdiff.diffusion import q_sample

    x = np.asarray(image) if hasattr(image, "shape") else image
    if getattr(x, "ndim", None) == 3:
        x = x[None]
    x = _check_images(x, "image")
    if x.shape[0] != 1:
        raise InputError(f"noising_strip takes one image (H, W, C) or (1, H, W, C); got shape "
                         f"{x.shape}")
    levels = np.asarray(levels)
    if levels.ndim != 1 or levels.size == 0 or not np.issubdtype(levels.dtype, np.integer):
        raise InputError(f"levels must be a non-empty list of integer timesteps; got {levels!r}")
    t = jnp.asarray(levels, dtype=jnp.int32)
    x0 = jnp.broadcast_to(jnp.asarray(x), (levels.size,) + x.shape[1:])
    noise = jnp.broadcast_to(jax.random.normal(key, x.shape, jnp.float32), x0.shape)
    x_t = q_sample(schedule, x0, t, noise)
    return image_grid(np.asarray(x_t), nrow=levels.size, padding=padding,
                      upscale=_auto_upscale(x.shape[2], upscale),
                      labels=[f"t={int(v)}" for v in levels])


def denoising_strip(trajectory: dict, every_k: int = 1, num_samples: int = 1,
                    upscale: int | None = None, padding: int = 2) -> np.ndarray:
    """A sampling trajectory as pictures: per sample, a row of x_t and a row of predicted x_0.

    Args:
      trajectory: {"x_t": (S, B, H, W, C), "pred_x0": (S, B, H, W, C), "timesteps": (S,)},
        the S sampler steps in order. Steps 0, every_k, 2 every_k, ... and the last are shown.
      every_k: show every k-th step.
      num_samples: how many of the B samples to show (two rows each).
      upscale: magnification; default makes cells at least 48 pixels wide.

    Returns:
      uint8 (H_out, W_out, C): 2 * num_samples rows, captioned "t=<t>" (x_t) and "x0 <t>".
    """
    if not isinstance(trajectory, dict) or not {"x_t", "pred_x0", "timesteps"} <= set(trajectory):
        raise InputError("trajectory must be a dict with keys 'x_t', 'pred_x0' (S, B, H, W, C) "
                         f"and 'timesteps' (S,); got "
                         f"{sorted(trajectory) if isinstance(trajectory, dict) else trajectory!r}")
    x_t, pred = np.asarray(trajectory["x_t"]), np.asarray(trajectory["pred_x0"])
    ts = np.asarray(trajectory["timesteps"])
    if x_t.ndim != 5 or pred.shape != x_t.shape or ts.shape != x_t.shape[:1]:
        raise InputError(f"trajectory arrays must be x_t, pred_x0 of one shape (S, B, H, W, C) "
                         f"and timesteps (S,); got {x_t.shape}, {pred.shape}, {ts.shape}")
    from jaxdiff.validation import check_int
    every_k = check_int(every_k, "every_k")
    num_samples = check_int(num_samples, "num_samples")
    if num_samples > x_t.shape[1]:
        raise InputError(f"num_samples={num_samples} exceeds the batch size {x_t.shape[1]}")
    steps = list(range(0, x_t.shape[0], every_k))
    if steps[-1] != x_t.shape[0] - 1:
        steps.append(x_t.shape[0] - 1)
    rows, labels = [], []
    for b in range(num_samples):
        rows += [x_t[steps, b], pred[steps, b]]
        labels += [f"t={int(ts[s])}" for s in steps] + [f"x0 {int(ts[s])}" for s in steps]
    grid = np.concatenate(rows, axis=0)
    return image_grid(_check_images(grid, "trajectory images"), nrow=len(steps),
                      padding=padding, upscale=_auto_upscale(x_t.shape[3], upscale),
                      labels=labels)


def _read_jsonl(path) -> list[dict]:
    records = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise InputError(f"{path}:{n} is not valid JSON: {e}") from None
    return records


def _ema(values: np.ndarray, weight: float) -> np.ndarray:
    """Exponential moving average, debiased (Adam-style) so early values are not pulled to 0."""
    out, acc = np.empty_like(values), 0.0
    for i, v in enumerate(values):
        acc = weight * acc + (1.0 - weight) * v
        out[i] = acc / (1.0 - weight ** (i + 1))
    return out


def _save_figure(fig, out_png) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    path = Path(out_png)
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=100)
    return path


def plot_metrics(metrics_jsonl_path, out_png,
                 keys: Sequence[str] = ("loss", "grad_norm", "learning_rate"),
                 smoothing: float = 0.9):
    """Plots training metrics from a JSON-lines log against "step", one panel per key found.

    Each line is a JSON object with "step" and metric values (the trainer's `metrics.jsonl`);
    keys that no line has are left out, and lines without a key are skipped for that key. Panels show the raw values (faint) and an exponential moving average (weight
    `smoothing`); "loss"-like keys (name contains "loss") use a log scale when all positive.

    Returns:
      The matplotlib Figure (also written to out_png).
    """
    from matplotlib.figure import Figure

    records = _read_jsonl(metrics_jsonl_path)
    if not 0.0 <= smoothing < 1.0:
        raise InputError(f"smoothing must be in [0, 1); got {smoothing!r}")
    series = {}
    for key in keys:
        pts = [(r["step"], r[key]) for r in records
               if "step" in r and isinstance(r.get(key), (int, float))]
        if pts:
            series[key] = np.asarray(pts, dtype=np.float64)
    if not series:
        raise InputError(f"no records in {str(metrics_jsonl_path)!r} have 'step' and any of "
                         f"{list(keys)}")
    fig = Figure(figsize=(5 * len(series), 3.5))
    for i, (key, pts) in enumerate(series.items()):
        ax = fig.add_subplot(1, len(series), i + 1)
        ax.plot(pts[:, 0], pts[:, 1], alpha=0.3, label="raw")
        ax.plot(pts[:, 0], _ema(pts[:, 1], smoothing), label=f"EMA {smoothing}")
        if "loss" in key and np.all(pts[:, 1] > 0):
            ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_title(key)
        ax.legend()
    fig.tight_layout()
    _save_figure(fig, out_png)
    return fig


def schedule_snr_plot(schedules: dict, out_png=None):
    """log SNR(t) and alpha_bar(t) against t/T for named schedules (for notebooks).

    Args:
      schedules: {name: NoiseSchedule}.
      out_png: optional path to write the figure to.

    Returns:
      The matplotlib Figure.
    """
    from matplotlib.figure import Figure

    if not isinstance(schedules, dict) or not schedules:
        raise InputError("schedules must be a non-empty dict {name: NoiseSchedule}")
    fig = Figure(figsize=(10, 3.5))
    ax_snr, ax_abar = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for name, schedule in schedules.items():
        abar = np.asarray(schedule.alphas_cumprod, dtype=np.float64)
        u = (np.arange(abar.size) + 1) / abar.size
        with np.errstate(divide="ignore"):
            ax_snr.plot(u, np.log(abar) - np.log1p(-abar), label=name)
        ax_abar.plot(u, abar, label=name)
    ax_snr.set(xlabel="t / T", ylabel="log SNR", title="log SNR(t)")
    ax_abar.set(xlabel="t / T", ylabel="alpha_bar", title="alpha_bar(t)")
    ax_snr.legend()
    fig.tight_layout()
    if out_png is not None:
        _save_figure(fig, out_png)
    return fig
