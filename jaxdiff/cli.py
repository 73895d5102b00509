"""The `jaxdiff` command: train | sample | eval | noise | plot.

Bad input (jaxdiff's own `InputError`, a checkpoint that cannot be read) exits with code 2 and a
one-paragraph message (set JAXDIFF_DEBUG=1 for a traceback); a run stopped early (non-finite steps,
a signal) exits with its own code and message. Any other exception is a bug: its traceback is
shown and the exit code is 1.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from jaxdiff.validation import InputError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jaxdiff", description="Train and sample denoising diffusion models in JAX.",
        epilog="Any config key can be overridden with --config.<key>=<value>, e.g. "
               "--config.train.num_steps=200.")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train (or continue training) a model in a workdir")
    train.add_argument("--workdir", required=True, help="run folder: checkpoints, logs, images")
    train.add_argument("--config", default="digits",
                       help="preset name (digits, digits_cond); default digits")
    train.add_argument("--restore_step", type=int, default=None,
                       help="continue from this checkpoint step instead of the latest")

    sample = sub.add_parser("sample", help="generate images from a trained workdir or a "
                                           "diffusers UNet2DModel folder")
    sample.add_argument("--workdir", default=None, help="a jaxdiff run (or use --pretrained)")
    sample.add_argument("--pretrained", default=None, metavar="DIR",
                        help="a diffusers pixel pipeline folder (model_index.json, unet/ a "
                             "UNet2DModel, scheduler/; safetensors), e.g. a DDPM checkpoint")
    sample.add_argument("--variant", default=None,
                        help="--pretrained weights variant, e.g. fp16 (<name>.fp16.safetensors)")
    sample.add_argument("--dtype", default=None, choices=("float32", "bfloat16"),
                        help="--pretrained: the UNet's parameter and compute dtype (default "
                             "float32)")
    sample.add_argument("--latents", default=None, metavar="FILE.npy",
                        help="initial noise x_T, float32 NHWC (num, H, W, C), instead of "
                             "drawing it from --seed (diffusers' NCHW arrays: transpose)")
    sample.add_argument("--num", type=int, default=64, help="number of images")
    sample.add_argument("--method", default=None, help="ddpm, ddim, dpmpp_2m, euler, heun; "
                        "flow_euler, flow_heun for flow runs")
    sample.add_argument("--steps", type=int, default=None, help="number of sampling steps")
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--out", default=None, help="PNG grid to write (default "
                                                    "<workdir>/samples_<method>_<steps>.png)")
    sample.add_argument("--npz", default=None, help="also write the images (NHWC in [-1, 1])")
    sample.add_argument("--batch", type=int, default=None, help="images per compiled call")
    sample.add_argument("--eta", type=float, default=None, help="DDIM eta (0 = deterministic)")
    sample.add_argument("--spacing", default=None, help="leading, trailing or linspace")
    sample.add_argument("--labels", default=None,
                        help="comma-separated class labels, repeated over the images")
    sample.add_argument("--guidance", type=float, default=None,
                        help="classifier-free guidance scale (conditional models)")
    sample.add_argument("--restore_step", type=int, default=None)
    sample.add_argument("--trajectory", action="store_true",
                        help="also write the denoising strip (x_t and predicted x0 along the "
                             "run) next to the grid as <out>_trajectory.png")
    sample.add_argument("--every", type=int, default=None,
                        help="trajectory: show every K-th step (default: about 10 columns)")

    ev = sub.add_parser("eval", help="sample quality (Frechet distance, precision/recall, "
                                     "classes) and bits/dim of a trained workdir")
    ev.add_argument("--workdir", required=True)
    ev.add_argument("--num", type=int, default=2000, help="images to generate")
    ev.add_argument("--method", default=None, help="ddpm, ddim, dpmpp_2m, euler, heun; "
                        "flow_euler, flow_heun for flow runs")
    ev.add_argument("--steps", type=int, default=None, help="number of sampling steps")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--batch", type=int, default=None, help="images per compiled call")
    ev.add_argument("--guidance", type=float, default=None,
                    help="classifier-free guidance scale (conditional models)")
    ev.add_argument("--features", default=None, metavar="MODULE:FUNCTION",
                    help="feature extractor images (N,H,W,C) in [-1,1] -> (N,D) for the Frechet "
                         "distance; required for data other than digits")
    ev.add_argument("--split", default="test", help="held-out split: the floor and bits/dim")
    ev.add_argument("--reference_split", default="train", help="real images samples are "
                                                               "compared with")
    ev.add_argument("--num_real", type=int, default=10000,
                    help="at most this many reference images")
    ev.add_argument("--bpd_num", type=int, default=256,
                    help="held-out images for the bits/dim bound (0 skips it)")
    ev.add_argument("--bpd_terms", type=int, default=50,
                    help="KL terms of the bound evaluated (of T-1; the sum is rescaled)")
    ev.add_argument("--restore_step", type=int, default=None)

    noise = sub.add_parser("noise", help="picture of the forward process: an image at "
                                         "several noise levels")
    noise.add_argument("--image", default=None,
                       help="PNG/JPEG to noise (default: a digit from the test split)")
    noise.add_argument("--index", type=int, default=0, help="which test digit without --image")
    noise.add_argument("--levels", default="0,100,250,500,750,999",
                       help="comma-separated timesteps in [0, T)")
    noise.add_argument("--out", default="noising.png", help="PNG to write")
    noise.add_argument("--schedule", default="linear",
                       help="linear, scaled_linear, cosine or sigmoid")
    noise.add_argument("--num_timesteps", type=int, default=1000)
    noise.add_argument("--image_size", type=int, default=16,
                       help="side the image is cropped and resized to")
    noise.add_argument("--seed", type=int, default=0)

    from jaxdiff.commands.pretrained import add_export_arguments

    add_export_arguments(sub.add_parser(
        "export", help="write a trained pixel run as a diffusers DDPMPipeline folder"))

    from jaxdiff.commands.reconstruct import add_arguments as add_reconstruct_arguments

    add_reconstruct_arguments(sub.add_parser(
        "reconstruct", help="reconstruction PSNR and picture of an autoencoder run"))
    from jaxdiff.commands.distill import add_arguments as add_distill_arguments

    add_distill_arguments(sub.add_parser(
        "distill", help="distil a run into a student run that samples in 1-4 steps"))
    from jaxdiff.commands.txt2img import add_arguments as add_txt2img_arguments

    add_txt2img_arguments(sub.add_parser(
        "txt2img", help="images from prompts with a Stable Diffusion folder (diffusers layout)"))

    plot = sub.add_parser("plot", help="plot loss and metrics over steps of a workdir")
    plot.add_argument("--workdir", required=True)
    plot.add_argument("--out", default=None, help="PNG (default <workdir>/metrics.png)")
    plot.add_argument("--keys", default="loss,grad_norm,learning_rate,steps_per_sec",
                      help="comma-separated metric names of metrics.jsonl")
    return parser


def _join_processes() -> None:
    """Joins the other processes of a multi-process run (JAXDIFF_COORDINATOR /
    JAXDIFF_NUM_PROCESSES / JAXDIFF_PROCESS_ID, or SLURM / TPU pods as JAX detects them) before
    anything touches a device; a no-op for a single process."""
    from jaxdiff import parallel

    parallel.initialize_distributed()


def _train(args, overrides) -> int:
    from jaxdiff.config_overrides import apply_overrides
    from jaxdiff.configs import get_config
    from jaxdiff.trainer import train

    _join_processes()
    config = apply_overrides(get_config(args.config), overrides)
    try:
        train(config, args.workdir, restore_step=args.restore_step)
    except Exception as error:
        from jaxdiff import parallel

        parallel.await_lost_process(error)  # ends the process naming a lost peer, if one is
        raise
    return 0


def _parse_label_list(text):
    if text is None:
        return None
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise InputError(f"--labels must be comma-separated integers like 0,1,2; got {text!r}") \
            from None


def _sample(args, overrides) -> int:
    import numpy as np

    from jaxdiff.generate import generate_images, load_run, save_grid

    if (args.workdir is None) == (args.pretrained is None):
        raise InputError("give exactly one of --workdir RUN (a jaxdiff run) and --pretrained DIR "
                         "(a diffusers UNet2DModel pipeline folder)")
    if args.pretrained is not None:
        from jaxdiff.commands.pretrained import sample_pretrained

        _no_overrides("sample --pretrained", overrides)
        return sample_pretrained(args, _check_output_path, _save_npz)
    _join_processes()
    if overrides:
        raise InputError(f"sample takes no --config overrides (got {sorted(overrides)}); it uses "
                         f"the config saved in the workdir")
    if args.variant is not None or args.dtype is not None:
        raise InputError("--variant and --dtype apply to --pretrained folders, not to jaxdiff "
                         "runs")
    labels = _parse_label_list(args.labels)
    if args.num < 1:
        raise InputError(f"--num must be >= 1; got {args.num}")
    _check_output_path(args.out, ".png")
    _check_output_path(args.npz, ".npz")
    latents = None
    if args.latents is not None:
        from jaxdiff.commands.pretrained import load_latents

        latents = load_latents(args.latents)
    config, graphdef, params, step = load_run(args.workdir, args.restore_step)
    if args.every is not None and args.every < 1:
        raise InputError(f"--every must be >= 1; got {args.every}")
    import jax

    if jax.process_index() != 0:  # multi-process: process 0 samples and writes the files
        return 0
    images = generate_images(config, graphdef, params, num=args.num, seed=args.seed,
                             method=args.method, num_steps=args.steps, labels=labels,
                             guidance_scale=args.guidance, batch_size=args.batch, eta=args.eta,
                             spacing=args.spacing, progress=True, latents=latents,
                             return_trajectory=args.trajectory)
    if args.trajectory:
        images, trajectory = images
    method = args.method or config.sampling.method
    steps = args.steps or config.sampling.num_steps
    out = Path(args.out or Path(args.workdir) / f"samples_{method}_{steps}.png")
    used_labels = None
    if int(config.model.num_classes) > 0:
        from jaxdiff.generate import parse_labels

        used_labels = parse_labels(labels, args.num, config.model.num_classes)
        if used_labels is None:
            used_labels = np.arange(args.num) % config.model.num_classes
    save_grid(images, out, labels=used_labels)
    print(f"wrote {out} ({args.num} images, {method}, {steps} steps, checkpoint step {step})",
          file=sys.stderr)
    if args.npz:
        _save_npz(args.npz, images, used_labels)
        print(f"wrote {args.npz}", file=sys.stderr)
    if args.trajectory:
        from jaxdiff.commands.pictures import trajectory_path, trajectory_picture
        from jaxdiff.viz import save_png

        strip = save_png(trajectory_picture(trajectory, args.every), trajectory_path(out))
        print(f"wrote {strip}", file=sys.stderr)
    return 0


def _no_overrides(command: str, overrides) -> None:
    if overrides:
        raise InputError(f"{command} takes no --config overrides (got {sorted(overrides)})")


def _eval(args, overrides) -> int:
    from jaxdiff.commands.eval import EVAL_FILE, evaluate_run, markdown_table

    _join_processes()
    _no_overrides("eval", overrides)
    results = evaluate_run(args.workdir, num=args.num, method=args.method, num_steps=args.steps,
                           seed=args.seed, batch_size=args.batch, guidance_scale=args.guidance,
                           features=args.features, split=args.split,
                           reference_split=args.reference_split, num_real=args.num_real,
                           bpd_num=args.bpd_num, bpd_terms=args.bpd_terms,
                           restore_step=args.restore_step, progress=True)
    print(markdown_table(results))
    print(f"wrote {Path(args.workdir) / EVAL_FILE}", file=sys.stderr)
    return 0


def _noise(args, overrides) -> int:
    from jaxdiff.commands.pictures import (
        default_digit,
        load_image,
        noise_strip_picture,
        parse_int_list,
    )
    from jaxdiff.viz import save_png

    _no_overrides("noise", overrides)
    _check_output_path(args.out, ".png")
    levels = parse_int_list(args.levels, "--levels")
    if args.image_size < 1:
        raise InputError(f"--image_size must be >= 1; got {args.image_size}")
    image = (load_image(args.image, args.image_size) if args.image
             else default_digit(args.image_size, args.index))
    strip = noise_strip_picture(image, levels, schedule=args.schedule,
                                num_timesteps=args.num_timesteps, seed=args.seed)
    print(f"wrote {save_png(strip, args.out)}", file=sys.stderr)
    return 0


def _plot(args, overrides) -> int:
    from jaxdiff.commands.pictures import plot_run

    _no_overrides("plot", overrides)
    _check_output_path(args.out, ".png")
    keys = [k.strip() for k in args.keys.split(",") if k.strip()]
    print(f"wrote {plot_run(args.workdir, args.out, keys)}", file=sys.stderr)
    return 0


def _check_output_path(path, suffix: str) -> None:
    if path is None:
        return
    if not str(path).endswith(suffix):
        raise InputError(f"output file {path!r} must end with {suffix}")
    parent = Path(path).absolute().parent
    if parent.exists() and not parent.is_dir():
        raise InputError(f"cannot write {path!r}: {str(parent)!r} is not a folder")


def _save_npz(path, images, labels) -> None:
    import numpy as np

    from jaxdiff.atomic_file import atomic_write

    arrays = {"images": images}
    if labels is not None:
        arrays["labels"] = np.asarray(labels)
    with atomic_write(path) as f:
        np.savez(f, **arrays)


def _quiet_library_logs() -> None:
    """orbax and grain log routine warnings through absl; users only need real problems."""
    import logging

    try:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)
    except ImportError:
        pass
    logging.getLogger("absl").setLevel(logging.ERROR)


def _export(args, overrides) -> int:
    from jaxdiff.commands.pretrained import export

    _no_overrides("export", overrides)
    return export(args)


def _reconstruct(args, overrides) -> int:
    from jaxdiff.commands.reconstruct import run

    _no_overrides("reconstruct", overrides)
    return run(args, _check_output_path)


def _distill(args, overrides) -> int:
    from jaxdiff.commands.distill import run

    _no_overrides("distill", overrides)
    return run(args)


def _txt2img(args, overrides) -> int:
    from jaxdiff.commands.txt2img import run

    _no_overrides("txt2img", overrides)
    return run(args, _check_output_path)


COMMANDS = {"train": _train, "sample": _sample, "eval": _eval, "noise": _noise, "plot": _plot,
            "txt2img": _txt2img, "export": _export, "reconstruct": _reconstruct,
            "distill": _distill}


def main(argv: list[str] | None = None) -> int:
    from jaxdiff import xla_defaults
    from jaxdiff.config_overrides import split_override_args

    # The command owns its process, so it may set XLA's measured CPU defaults (before JAX starts).
    xla_defaults.apply()
    argv = sys.argv[1:] if argv is None else list(argv)
    _quiet_library_logs()
    try:
        rest, overrides = split_override_args(argv)
    except InputError as e:
        print(f"jaxdiff: error: {e}", file=sys.stderr)
        return 2
    args = _parser().parse_args(rest)
    try:
        return COMMANDS[args.command](args, overrides)
    except KeyboardInterrupt:
        print("jaxdiff: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        from jaxdiff.checkpoint import CheckpointError
        from jaxdiff.trainer import TrainingStopped

        # Only errors that describe the user's input or run are messages; anything else (a
        # TypeError or KeyError from a bug included) keeps its traceback: exit code 1.
        if os.environ.get("JAXDIFF_DEBUG") or not isinstance(
                e, (InputError, CheckpointError, TrainingStopped)):
            raise
        message = " ".join(str(e).split())
        print(f"jaxdiff {args.command}: error: {message}", file=sys.stderr)
        return e.exit_code if isinstance(e, TrainingStopped) else 2


if __name__ == "__main__":
    sys.exit(main())
