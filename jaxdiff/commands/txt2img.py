"""`jaxdiff txt2img`: images from prompts with a Stable Diffusion folder (diffusers layout).

Examples:
  jaxdiff txt2img --pretrained ./stable-diffusion-v1-5 --prompt "a lighthouse at dusk" --num 4
  jaxdiff txt2img --pretrained DIR --prompts_file prompts.txt --method ddim --steps 30 \\
      --guidance 7.5 --dtype bfloat16 --out grid.png --npz images.npz
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jaxdiff.validation import InputError, InputFileNotFoundError

DTYPES = ("float32", "bfloat16")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The txt2img options (registered by jaxdiff/cli.py)."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--pretrained", metavar="DIR",
                        help="a diffusers Stable Diffusion pipeline folder (model_index.json, "
                             "unet/, vae/, text_encoder/, tokenizer/, scheduler/; safetensors)")
    source.add_argument("--workdir", metavar="RUN",
                        help="a jaxdiff-trained text-to-image run (preset shapes_t2i)")
    parser.add_argument("--prompt", default=None, help="the text to draw")
    parser.add_argument("--prompts_file", default=None, metavar="FILE",
                        help="one prompt per line, one image per line (instead of --prompt)")
    parser.add_argument("--negative_prompt", default=None,
                        help="what to steer away from (default: the empty prompt)")
    parser.add_argument("--num", type=int, default=None,
                        help="images of --prompt (default 1; not used with --prompts_file)")
    parser.add_argument("--method", default=None,
                        help="ddim, dpmpp_2m, euler, heun, ddpm (default: the folder's "
                             "scheduler; dpmpp_2m where jaxdiff has no counterpart, e.g. PNDM)")
    parser.add_argument("--steps", type=int, default=25, help="sampler steps (default 25)")
    parser.add_argument("--guidance", type=float, default=7.5,
                        help="classifier-free guidance scale (default 7.5; 1 = no guidance)")
    parser.add_argument("--height", type=int, default=None,
                        help="pixels (default: the model's training size)")
    parser.add_argument("--width", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0,
                        help="image i starts from noise drawn from (seed, i)")
    parser.add_argument("--latents", default=None, metavar="FILE.npy",
                        help="initial latents (num, height/8, width/8, 4) float32 NHWC, e.g. "
                             "diffusers' latents transposed from NCHW, instead of --seed")
    parser.add_argument("--dtype", default="float32", choices=DTYPES,
                        help="compute dtype of the three networks (default float32)")
    parser.add_argument("--batch", type=int, default=None,
                        help="images per compiled call (default: all, at most 8)")
    parser.add_argument("--out", default="txt2img.png", help="PNG grid (default txt2img.png)")
    parser.add_argument("--npz", default=None,
                        help="also write `images` (NHWC in [-1, 1]) and `prompts` to this .npz")


def read_prompts(args) -> list[str]:
    """The prompts, one per image, from --prompt/--num or --prompts_file."""
    if (args.prompt is None) == (args.prompts_file is None):
        raise InputError("give exactly one of --prompt TEXT and --prompts_file FILE")
    if args.prompts_file is not None:
        if args.num is not None:
            raise InputError("--num is not used with --prompts_file: the file makes one image "
                             "per line (repeat a line for several images of one prompt)")
        path = Path(args.prompts_file)
        if not path.is_file():
            raise InputFileNotFoundError(f"prompts file {str(path)!r} does not exist")
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise InputError(f"cannot read prompts file {str(path)!r} as UTF-8 text: {e}") \
                from None
        prompts = [line.strip() for line in lines if line.strip()]
        if not prompts:
            raise InputError(f"prompts file {str(path)!r} has no prompts: write one prompt per "
                             f"line")
        return prompts
    num = 1 if args.num is None else args.num
    if num < 1:
        raise InputError(f"--num must be >= 1; got {num}")
    return [args.prompt] * num


def save_npz(path, images, prompts) -> None:
    """images and the aligned prompts (fixed-width unicode: np.load needs no pickle)."""
    import numpy as np

    from jaxdiff.atomic_file import atomic_write

    with atomic_write(path) as f:
        np.savez(f, images=np.asarray(images, np.float32), prompts=np.array(prompts, dtype=str))


def run(args, check_output_path) -> int:
    """Loads the folder, generates in batches with progress, writes the grid (and npz)."""
    from jaxdiff.pipelines.loading import load_text_to_image
    from jaxdiff.pipelines.text_to_image import check_latents, check_size, describe, generate
    from jaxdiff.progress import Progress
    from jaxdiff.viz import image_grid, save_png

    check_output_path(args.out, ".png")
    check_output_path(args.npz, ".npz")
    prompts = read_prompts(args)
    if args.steps < 1:
        raise InputError(f"--steps must be >= 1; got {args.steps}")
    if args.batch is not None and args.batch < 1:
        raise InputError(f"--batch must be >= 1; got {args.batch}")
    from jaxdiff.commands.pretrained import load_latents

    latents = load_latents(args.latents) if args.latents else None
    if args.workdir is not None:
        from jaxdiff.pipelines.run_loading import load_run_text_to_image

        if args.dtype != "float32":
            raise InputError("--dtype bfloat16 is for --pretrained folders; a --workdir run "
                             "generates in float32")
        model = load_run_text_to_image(args.workdir)
    else:
        model = load_text_to_image(args.pretrained, dtype=args.dtype)
    height, width = check_size(model, args.height, args.width)
    if latents is not None:  # checked before anything is compiled
        latents = check_latents(model, latents, len(prompts), height, width)
    if args.method is None and model.sampler.note:
        print(f"note: {model.sampler.note}", file=sys.stderr)
    print(f"sampling with {describe(model, args.method)}, {args.steps} steps, guidance "
          f"{args.guidance:g}, {height}x{width}", file=sys.stderr)
    bar = Progress(len(prompts), 0, desc="txt2img", unit="image",
                   enabled=len(prompts) > (args.batch or 8))
    images = generate(model, prompts, args.negative_prompt, num_steps=args.steps,
                      method=args.method, guidance_scale=args.guidance, height=height,
                      width=width, key=args.seed,
                      latents=latents, batch_size=args.batch, progress=bar.update)
    bar.close()
    save_png(image_grid(images), args.out)
    print(f"wrote {args.out} ({len(prompts)} images)", file=sys.stderr)
    if args.npz:
        save_npz(args.npz, images, prompts)
        print(f"wrote {args.npz}", file=sys.stderr)
    return 0
