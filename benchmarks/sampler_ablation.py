"""Sampler variants on one trained digits run, scored as `jaxdiff eval` scores them.

Usage:
  python -m benchmarks.sampler_ablation --workdir runs/digits --num 500 \
      ddim:50 ddim:50:clip ddpm:100 dpmpp_2m:20:clip

A variant is `method:steps` followed by any of `clip` (clip the predicted x0 to [-1, 1]),
`thr` (dynamic thresholding), `eta=X` (DDIM), `g=X` (guidance scale, conditional runs).
Images are drawn exactly as `jaxdiff.generate.generate_images` draws them (image i from
`fold_in(key(seed), i)`, `jaxdiff.sampling.image_keys`), so a variant without `clip`/`thr` reproduces
`jaxdiff eval --num N --method M --steps K` to the digit. Printed per variant: the Frechet
distance and recall of the first 297 samples (the real test split's size, as `jaxdiff eval`
reports them), and precision, confident fraction and pixels outside [-1, 1] over all samples.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np


def parse_variant(text: str) -> tuple[str, int, dict, float | None]:
    """'ddim:50:clip:eta=0.5' -> ("ddim", 50, sampler options, guidance or None)."""
    parts = text.split(":")
    if len(parts) < 2 or not parts[1].isdigit():
        raise ValueError(f"a variant looks like method:steps[:clip|thr|eta=X|g=X]; got {text!r}")
    options, guidance = {}, None
    for part in parts[2:]:
        if part == "clip":
            options["clip_sample"] = True
        elif part == "thr":
            options["thresholding"] = True
        elif part.startswith("eta="):
            options["eta"] = float(part[4:])
        elif part.startswith("g="):
            guidance = float(part[2:])
        else:
            raise ValueError(f"unknown variant option {part!r} in {text!r}; choose clip, thr, "
                             f"eta=X or g=X")
    return parts[0], int(parts[1]), options, guidance


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--num", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("variants", nargs="+")
    args = parser.parse_args(argv)
    variants = [parse_variant(v) for v in args.variants]

    import jax
    import jax.numpy as jnp

    from jaxdiff.data import load_split
    from jaxdiff.evaluation import evaluate_samples, load_digits_classifier
    from jaxdiff.generate import load_run
    from jaxdiff.models import make_model_fn
    from jaxdiff.sampling import sample
    from jaxdiff.sampling.image_keys import image_keys, initial_noise, step_noise_keys
    from jaxdiff.training import schedule_from_config

    config, graphdef, params, step = load_run(args.workdir)
    classifier = load_digits_classifier()
    reference, _ = load_split(config.data, "train", 10000)
    held_out, _ = load_split(config.data, "test", 10000)
    num_classes = int(config.model.get("num_classes", 0))
    model_fn = make_model_fn(graphdef, params, labels_enabled=num_classes > 0)
    schedule = schedule_from_config(config)
    batch = min(256, args.num)

    def score(images, labels=None):
        return evaluate_samples(images, reference, classifier.features, classifier,
                                requested_labels=labels)

    floor = score(held_out)
    n_floor = held_out.shape[0]
    print(f"{args.workdir} step {step}; real test floor: Frechet {floor['frechet_distance']:.2f}, "
          f"precision {floor['precision']:.3f}, recall {floor['recall']:.3f}, confident "
          f"{floor['confident_fraction']:.3f}")
    print("| sampler | Frechet (297) | x floor | precision | recall (297) | confident | "
          "outside [-1,1] | cond. accuracy |")
    print("|---|---|---|---|---|---|---|---|")
    labels = np.arange(args.num, dtype=np.int32) % num_classes if num_classes else None
    for text, (method, steps, options, guidance) in zip(args.variants, variants):
        options = {"spacing": config.sampling.get("spacing", "leading"),
                   "eta": float(config.sampling.eta), **options}
        if num_classes:
            g = float(config.sampling.get("guidance_scale", 1.0) if guidance is None
                      else guidance)
        out = []
        for i in range(-(-args.num // batch)):
            keys = image_keys(jax.random.key(args.seed), i * batch, batch)
            x_T = initial_noise(keys, (config.model.image_size, config.model.image_size,
                                       config.model.in_channels))
            extra = {}
            if num_classes:
                chunk = np.resize(labels[i * batch:(i + 1) * batch], batch)
                extra = dict(labels=jnp.asarray(chunk), guidance_scale=g,
                             null_label=num_classes)
            out.append(np.asarray(sample(model_fn, schedule, x_T, method=method,
                                         num_steps=steps, key=step_noise_keys(keys),
                                         prediction_type=config.diffusion.prediction_type,
                                         **options, **extra)))
        images = np.concatenate(out)[:args.num]
        full = score(images, labels)
        matched = score(images[:n_floor], None if labels is None else labels[:n_floor])
        accuracy = full.get("conditional_accuracy")
        print(f"| {text} | {matched['frechet_distance']:.2f} | "
              f"{matched['frechet_distance'] / floor['frechet_distance']:.2f} | "
              f"{full['precision']:.3f} | {matched['recall']:.3f} | "
              f"{full['confident_fraction']:.3f} | {full['out_of_range_fraction']:.3f} | "
              f"{'-' if accuracy is None else f'{accuracy:.3f}'} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
