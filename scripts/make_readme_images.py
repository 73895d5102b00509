"""Makes the README's pictures (small PNGs) from a trained run.

Usage:
  python scripts/make_readme_images.py --workdir runs/digits [--out docs/images]

Writes into --out:
  noising.png     a test digit at noise levels 0..999 of the run's schedule (forward process)
  samplers.png    one row per sampler, all from the same starting noise (run's EMA parameters)
  denoising.png   x_t and the predicted x0 along a DDIM run (reverse process)
  samples.png     64 samples (captioned with their class for a conditional model)
  loss.png        the training loss over steps (from metrics.jsonl)
Takes about a minute on a 2-core CPU for the default digits model.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

#: (method, number of steps) of the sampler comparison: DDPM is ancestral and needs more steps.
# Heun is left out: on the default cosine schedule (sigma_max ~3e4) its first correction step
# amplifies model errors ~1500x (README, Samplers).
SAMPLERS = (("ddpm", 100), ("ddim", 50), ("ddim", 20), ("dpmpp_2m", 20), ("euler", 20))
NOISE_LEVELS = (0, 50, 100, 250, 500, 750, 999)


def make_images(workdir, out, *, num: int = 64, seed: int = 0, per_sampler: int = 8) -> list:
    """Writes the five pictures; returns their paths."""
    import jax

    from jaxdiff.commands.pictures import default_digit, trajectory_picture
    from jaxdiff.generate import generate_images, load_run
    from jaxdiff.training import schedule_from_config
    from jaxdiff.viz import image_grid, noising_strip, plot_metrics, save_png

    out = Path(out)
    config, graphdef, params, _ = load_run(workdir)
    num_classes = int(config.model.get("num_classes", 0))
    schedule = schedule_from_config(config)
    written = []

    T = schedule.num_timesteps
    levels = sorted({min(level * T // 1000, T - 1) for level in NOISE_LEVELS})
    digit = default_digit(config.model.image_size) if config.model.in_channels == 1 else None
    if digit is not None:
        strip = noising_strip(digit, levels, schedule, jax.random.key(seed))
        written.append(save_png(strip, out / "noising.png"))

    rows, captions = [], []
    for method, steps in SAMPLERS:
        rows.append(generate_images(config, graphdef, params, num=per_sampler, seed=seed,
                                    method=method, num_steps=steps))
        captions += [f"{method} {steps}"] + [""] * (per_sampler - 1)
    grid = image_grid(np.concatenate(rows), nrow=per_sampler, upscale=3, labels=captions)
    written.append(save_png(grid, out / "samplers.png"))

    _, trajectory = generate_images(config, graphdef, params, num=2, seed=seed, method="ddim",
                                    num_steps=20, return_trajectory=True)
    written.append(save_png(trajectory_picture(trajectory, every=2, num_samples=2),
                            out / "denoising.png"))

    images = generate_images(config, graphdef, params, num=num, seed=seed)
    labels = np.arange(num) % num_classes if num_classes else None
    written.append(save_png(image_grid(images, upscale=2, labels=labels), out / "samples.png"))

    metrics = Path(workdir) / "metrics.jsonl"
    if metrics.is_file():
        plot_metrics(metrics, out / "loss.png", keys=("loss",))
        written.append(out / "loss.png")
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", required=True, help="trained run (jaxdiff train)")
    parser.add_argument("--out", default="docs/images", help="folder for the PNGs")
    parser.add_argument("--num", type=int, default=64, help="images in samples.png")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)  # orbax's routine notices
    except ImportError:
        pass
    try:
        for path in make_images(args.workdir, args.out, num=args.num, seed=args.seed):
            print(f"wrote {path}", file=sys.stderr)
    except (ValueError, FileNotFoundError) as e:
        print(f"make_readme_images: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
