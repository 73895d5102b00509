"""The `jaxdiff` command: train | sample | eval | noise | plot.

Bad input exits with code 2 and a one-paragraph message (set JAXDIFF_DEBUG=1 for a traceback).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

USER_ERRORS = (ValueError, TypeError, FileNotFoundError, KeyError)


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

    sample = sub.add_parser("sample", help="generate images from a trained workdir")
    sample.add_argument("--workdir", required=True)
    sample.add_argument("--num", type=int, default=64, help="number of images")
    sample.add_argument("--method", default=None, help="ddpm, ddim, dpmpp_2m, euler, heun")
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
    return parser


def _train(args, overrides) -> int:
    from jaxdiff.config_overrides import apply_overrides
    from jaxdiff.configs import get_config
    from jaxdiff.trainer import train

    config = apply_overrides(get_config(args.config), overrides)
    train(config, args.workdir, restore_step=args.restore_step)
    return 0


def _parse_label_list(text):
    if text is None:
        return None
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"--labels must be comma-separated integers like 0,1,2; got {text!r}") \
            from None


def _sample(args, overrides) -> int:
    import numpy as np

    from jaxdiff.generate import generate_images, load_run, save_grid

    if overrides:
        raise ValueError(f"sample takes no --config overrides (got {sorted(overrides)}); it uses "
                         f"the config saved in the workdir")
    labels = _parse_label_list(args.labels)
    if args.num < 1:
        raise ValueError(f"--num must be >= 1; got {args.num}")
    _check_output_path(args.out, ".png")
    _check_output_path(args.npz, ".npz")
    config, graphdef, params, step = load_run(args.workdir, args.restore_step)
    images = generate_images(config, graphdef, params, num=args.num, seed=args.seed,
                             method=args.method, num_steps=args.steps, labels=labels,
                             guidance_scale=args.guidance, batch_size=args.batch, eta=args.eta,
                             spacing=args.spacing, progress=True)
    method = args.method or config.sampling.method
    steps = args.steps or config.sampling.num_steps
    out = Path(args.out or Path(args.workdir) / f"samples_{method}_{steps}.png")
    used_labels = None
    if int(config.model.get("num_classes", 0)) > 0:
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
    return 0


def _check_output_path(path, suffix: str) -> None:
    if path is None:
        return
    if not str(path).endswith(suffix):
        raise ValueError(f"output file {path!r} must end with {suffix}")
    parent = Path(path).absolute().parent
    if parent.exists() and not parent.is_dir():
        raise ValueError(f"cannot write {path!r}: {str(parent)!r} is not a folder")


def _save_npz(path, images, labels) -> None:
    import numpy as np

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    arrays = {"images": images}
    if labels is not None:
        arrays["labels"] = np.asarray(labels)
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def _quiet_library_logs() -> None:
    """orbax and grain log routine warnings through absl; users only need real problems."""
    import logging

    try:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)
    except ImportError:
        pass
    logging.getLogger("absl").setLevel(logging.ERROR)


COMMANDS = {"train": _train, "sample": _sample}


def main(argv: list[str] | None = None) -> int:
    from jaxdiff.config_overrides import split_override_args

    argv = sys.argv[1:] if argv is None else list(argv)
    _quiet_library_logs()
    try:
        rest, overrides = split_override_args(argv)
    except ValueError as e:
        print(f"jaxdiff: error: {e}", file=sys.stderr)
        return 2
    args = _parser().parse_args(rest)
    try:
        return COMMANDS[args.command](args, overrides)
    except KeyboardInterrupt:
        print("jaxdiff: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - turned into a one-paragraph message below
        from jaxdiff.checkpoint import CheckpointError
        from jaxdiff.trainer import TrainingStopped

        if os.environ.get("JAXDIFF_DEBUG") or not isinstance(
                e, USER_ERRORS + (CheckpointError, TrainingStopped)):
            raise
        message = " ".join(str(e).split())
        print(f"jaxdiff {args.command}: error: {message}", file=sys.stderr)
        return e.exit_code if isinstance(e, TrainingStopped) else 2


if __name__ == "__main__":
    sys.exit(main())
