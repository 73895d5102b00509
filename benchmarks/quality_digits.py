"""Sample quality of a digits model, judged by the digits classifier.

Usage:
  python -m benchmarks.quality_digits --npz samples.npz [--labels-key labels | --labels-npz f]
  python -m benchmarks.quality_digits --workdir runs/digits --num 500 --method ddim --steps 50

Reports, for the samples and, as the floor, for an equally large subset of the real TRAIN split
(both judged against the real TEST split): the fraction classified with confidence >= 0.9, the
class histogram and its entropy (bits; uniform over 10 classes is 3.32), the Frechet distance in
the classifier's 64-d feature space, improved precision/recall (k=3), and the conditional
accuracy when the samples' requested labels are known. Frechet distance and recall depend on the
number of samples, which is why the floor uses the same number of real images.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from jaxdiff.evaluation import digits_split, evaluate_samples, load_digits_classifier

ROWS = (
    ("confident_fraction", "confident (p >= 0.9)", "{:.3f}"),
    ("class_entropy_bits", "class entropy (bits, max 3.32)", "{:.3f}"),
    ("frechet_distance", "Frechet distance (classifier features)", "{:.3f}"),
    ("precision", "precision (k=3)", "{:.3f}"),
    ("recall", "recall (k=3)", "{:.3f}"),
    ("conditional_accuracy", "conditional accuracy", "{:.3f}"),
    ("class_histogram", "class histogram", "{}"),
    ("out_of_range_fraction", "pixels outside [-1, 1] (clipped)", "{:.4f}"),
    ("num_samples", "images", "{}"),
)


def samples_from_workdir(workdir: str, num: int, method: str, steps: int, seed: int,
                         labels=None, guidance: float = 1.0):
    """Samples `num` images from a trained run's latest checkpoint (EMA parameters).

    Uses `jaxdiff.generate.load_run` + `generate_images` (the code behind `jaxdiff sample`), so
    the same seed gives the same images as the CLI. A class-conditional model without explicit
    labels generates classes 0, 1, ..., 9, 0, ... (generate_images' default), which are returned
    as the requested labels.

    Returns:
      (images float32 (num, H, W, C) in [-1, 1], requested labels int32 (num,) or None).
    """
    from jaxdiff.generate import generate_images, load_run, parse_labels

    config, graphdef, params, _ = load_run(workdir)
    num_classes = int(config.model.get("num_classes", 0))
    if num_classes > 0:
        labels = parse_labels(labels, num, num_classes)
        if labels is None:
            labels = np.arange(num, dtype=np.int32) % num_classes
    images = generate_images(config, graphdef, params, num=num, seed=seed, method=method,
                             num_steps=steps, labels=labels,
                             guidance_scale=guidance if num_classes > 0 else None)
    return images, labels


def load_npz_samples(path: str, key: str = "images", labels_key: str | None = "labels",
                     labels_npz: str | None = None):
    """(images float32 (N, 16, 16, 1), labels int (N,) or None) from .npz file(s)."""
    with np.load(path, allow_pickle=False) as data:
        if key not in data.files:
            raise ValueError(f"{path} has no array {key!r}; it holds {sorted(data.files)}")
        images = np.asarray(data[key], dtype=np.float32)
        labels = None
        if labels_npz is None and labels_key is not None and labels_key in data.files:
            labels = np.asarray(data[labels_key])
    if labels_npz is not None:
        with np.load(labels_npz, allow_pickle=False) as data:
            name = labels_key or "labels"
            if name not in data.files:
                raise ValueError(f"{labels_npz} has no array {name!r}; it holds "
                                 f"{sorted(data.files)}")
            labels = np.asarray(data[name])
    if labels is not None and labels.shape != images.shape[:1]:
        raise ValueError(f"labels must have shape ({images.shape[0]},) to match the images; got "
                         f"{labels.shape}")
    return images, labels


def evaluate(images, labels=None, *, seed: int = 0, cache_dir=None) -> dict:
    """{"samples": metrics, "real_train": metrics} against the real test split."""
    clf = load_digits_classifier(cache_dir)
    test_x, _ = digits_split("test")
    train_x, train_y = digits_split("train")
    n = min(images.shape[0], train_x.shape[0])
    subset = np.random.default_rng(seed).permutation(train_x.shape[0])[:n]
    common = {"extractor": clf.features, "classifier": clf}
    return {
        "samples": evaluate_samples(images, test_x, requested_labels=labels, **common),
        "real_train": evaluate_samples(train_x[subset], test_x, requested_labels=train_y[subset],
                                       **common),
        "classifier_test_accuracy": clf.test_accuracy,
    }


def markdown_table(results: dict) -> str:
    lines = ["| metric | samples | real train (floor) |", "|---|---|---|"]
    for key, name, fmt in ROWS:
        cells = []
        for column in ("samples", "real_train"):
            value = results[column].get(key)
            cells.append("-" if value is None else fmt.format(value))
        if cells[0] == "-" and key == "conditional_accuracy":
            continue
        lines.append(f"| {name} | {cells[0]} | {cells[1]} |")
    lines.append(f"\nreference: real test split ({results['samples']['num_real']} images); "
                 f"classifier test accuracy {results['classifier_test_accuracy']:.4f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--npz", help=".npz with the samples (NHWC in [-1, 1])")
    source.add_argument("--workdir", help="training run to sample from")
    parser.add_argument("--key", default="images", help="array name of the images in --npz")
    parser.add_argument("--labels-key", default="labels",
                        help="array name of the requested labels (used if present)")
    parser.add_argument("--labels-npz", help=".npz holding the requested labels")
    parser.add_argument("--num", type=int, default=500)
    parser.add_argument("--method", default="ddim")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--guidance", type=float, default=1.0)
    parser.add_argument("--cache-dir", help="classifier cache folder (default $JAXDIFF_CACHE "
                                            "or ~/.cache/jaxdiff)")
    parser.add_argument("--json", help="also write the results as JSON here")
    args = parser.parse_args(argv)
    try:
        if args.npz:
            images, labels = load_npz_samples(args.npz, args.key, args.labels_key,
                                              args.labels_npz)
        else:
            images, labels = samples_from_workdir(args.workdir, args.num, args.method,
                                                  args.steps, args.seed,
                                                  guidance=args.guidance)
        results = evaluate(np.asarray(images, np.float32),
                           None if labels is None else np.asarray(labels),
                           seed=args.seed, cache_dir=args.cache_dir)
    except (ValueError, TypeError, OSError) as e:
        print(f"quality_digits: {e}", file=sys.stderr)
        return 2
    print(markdown_table(results))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
