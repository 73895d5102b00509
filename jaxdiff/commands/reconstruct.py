"""`jaxdiff reconstruct`: reconstruction PSNR of an autoencoder run and a picture.

  jaxdiff reconstruct --workdir runs/shapes_vae [--num 512] [--out recon.png]

Encodes held-out images (the "test" split, else "train"), decodes the posterior mean, prints the
PSNR (dB, images in [-1, 1]) and writes rows of originals each followed by its reconstructions.
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workdir", required=True, help="an autoencoder run (preset shapes_vae)")
    parser.add_argument("--num", type=int, default=512, help="images to reconstruct")
    parser.add_argument("--restore_step", type=int, default=None)
    parser.add_argument("--out", default=None,
                        help="PNG to write (default <workdir>/reconstruct.png)")


def run(args, check_output_path) -> int:
    from pathlib import Path

    from jaxdiff.run_kind import open_run
    from jaxdiff.tasks.autoencoder import AutoencoderTask, psnr
    from jaxdiff.tasks.latents import restore_autoencoder
    from jaxdiff.trainer import saved_steps
    from jaxdiff.validation import InputFileNotFoundError, check_int
    from jaxdiff.viz import save_png

    check_output_path(args.out, ".png")
    check_int(args.num, "--num", 1)
    workdir, config = open_run(args.workdir, "autoencoder")
    if not saved_steps(workdir):
        raise InputFileNotFoundError(f"no checkpoint in {str(workdir)!r}: train it first with "
                                     f"`jaxdiff train --config shapes_vae --workdir {workdir}`")
    autoencoder = restore_autoencoder(workdir, config, args.restore_step,
                                      missing_step_hint="choose --restore_step from those")
    task = AutoencoderTask(autoencoder.config)
    originals, recon = task.reconstructions(autoencoder.graphdef, autoencoder.params, args.num)
    print(f"reconstruction PSNR {psnr(originals, recon):.2f} dB over {len(originals)} images "
          f"(step {autoencoder.step})")
    out = args.out or str(Path(args.workdir) / "reconstruct.png")
    save_png(task.sample_grid(autoencoder.graphdef, autoencoder.params, 32), out)
    print(f"wrote {out} (rows: originals, then their reconstructions)", file=sys.stderr)
    return 0
