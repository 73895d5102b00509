"""`jaxdiff sample --pretrained DIR` (a diffusers UNet2DModel pipeline folder) and
`jaxdiff export --workdir RUN --out DIR` (a jaxdiff run as a diffusers DDPMPipeline folder).

Examples:
  jaxdiff sample --pretrained ./ddpm-cifar10-32 --method ddim --steps 50 --num 16
  jaxdiff sample --pretrained DIR --latents x_T.npy --npz images.npz   # reproduce diffusers
  jaxdiff export --workdir runs/digits --out digits-diffusers
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from jaxdiff.validation import InputError, InputFileNotFoundError

if TYPE_CHECKING:
    import numpy as np

DEFAULT_STEPS = 50
# `jaxdiff sample` options that only mean something for a jaxdiff run
_RUN_ONLY = ("restore_step", "labels", "guidance", "trajectory", "every")


def load_latents(path) -> np.ndarray:
    """The array of a .npy file (never a pickle)."""
    import numpy as np

    if not str(path).endswith(".npy") or not Path(path).is_file():
        raise InputFileNotFoundError(f"--latents must be an existing .npy file; got {path!r}")
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read --latents {str(path)!r} as a numpy array (no pickle): "
                         f"{e}") from None


def sample_pretrained(args, check_output_path, save_npz) -> int:
    """The `sample --pretrained` flow: checks, loading, batches with progress, the files."""
    from jaxdiff.generate import save_grid
    from jaxdiff.pipelines.scheduler_config import sampler_settings
    from jaxdiff.pretrained.pixel_sampling import check_latents, generate, load_pixel_pipeline
    from jaxdiff.progress import Progress

    given = [f"--{name}" for name in _RUN_ONLY if getattr(args, name, None) not in (None, False)]
    if given:
        raise InputError(f"{', '.join(given)} apply to a jaxdiff run (--workdir), not to "
                         f"--pretrained folders")
    if args.num < 1:
        raise InputError(f"--num must be >= 1; got {args.num}")
    steps = DEFAULT_STEPS if args.steps is None else args.steps
    if steps < 1:
        raise InputError(f"--steps must be >= 1; got {steps}")
    check_output_path(args.out, ".png")
    check_output_path(args.npz, ".npz")
    latents = load_latents(args.latents) if args.latents else None
    pipe = load_pixel_pipeline(args.pretrained, variant=args.variant,
                               dtype=args.dtype or "float32")
    if latents is not None:  # checked before anything is compiled
        latents = check_latents(latents, args.num, pipe.image_shape, "--latents")
    settings = sampler_settings(pipe.scheduler_config, args.method)
    if args.method is None and settings.note:
        print(f"note: {settings.note}", file=sys.stderr)
    bar = Progress(args.num, 0, desc="sample", unit="image", enabled=True)
    images = generate(pipe, num=args.num, num_steps=steps, method=args.method, seed=args.seed,
                      latents=latents, batch_size=args.batch, eta=args.eta or 0.0,
                      spacing=args.spacing, progress=bar.update)
    bar.close()
    out = args.out or f"samples_{settings.method}_{steps}.png"  # the folder may be read-only
    save_grid(images, out)
    print(f"wrote {out} ({args.num} images, {settings.method}, {steps} steps, "
          f"{args.pretrained})", file=sys.stderr)
    if args.npz:
        save_npz(args.npz, images, None)
        print(f"wrote {args.npz}", file=sys.stderr)
    return 0


def add_export_arguments(parser) -> None:
    """The `jaxdiff export` options (registered by jaxdiff/cli.py)."""
    parser.add_argument("--workdir", required=True, help="the jaxdiff run to export")
    parser.add_argument("--out", required=True,
                        help="new (or empty) folder for the diffusers DDPMPipeline")
    parser.add_argument("--restore_step", type=int, default=None,
                        help="export this checkpoint step instead of the latest")


def export(args) -> int:
    from jaxdiff.pretrained.export import export_run

    out = export_run(args.workdir, args.out, step=args.restore_step)
    print(f"wrote {out} (diffusers DDPMPipeline: model_index.json, unet/, scheduler/; load it "
          f"with diffusers.DDPMPipeline.from_pretrained or `jaxdiff sample --pretrained`)",
          file=sys.stderr)
    return 0
