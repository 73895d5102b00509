"""Input-pipeline throughput (images/s) for digits and a synthetic 32x32x3 array_record dataset.

Run from the repository root:

    .venv/bin/python -m benchmarks.input_pipeline [--batches 150] [--batch-size 64]

Both datasets are built into a temporary TFDS data_dir (digits: the package's builder; the
synthetic one: a small `GeneratorBasedBuilder` with `tfds.features.Tensor` features, 10k examples
of random uint8 32x32x3). Each row runs the full training pipeline (global shuffle, repeat,
per-example transforms, batching) with `worker_count` 0 (threads in this process) and 2 (grain
worker processes); "first batch" includes worker start-up, images/s is measured over the
following batches. Prints a markdown table. Compare images/s with the training step's images/s.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import tensorflow_datasets as tfds

from jaxdiff.data import input_pipeline
from jaxdiff.data.digits_builder import prepare_digits

SYNTHETIC_EXAMPLES = 10_000


class SyntheticRgb32(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """10k random uint8 (32, 32, 3) images with labels 0..9 (array_record, no TensorFlow)."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=(32, 32, 3), dtype=np.uint8),
            "label": tfds.features.ClassLabel(num_classes=10),
        }))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        rng = np.random.default_rng(0)
        for i in range(SYNTHETIC_EXAMPLES):
            yield i, {"image": rng.integers(0, 256, (32, 32, 3), dtype=np.uint8),
                      "label": i % 10}


def measure(config: dict, *, batch_size: int, batches: int, worker_count: int) -> dict:
    start = time.perf_counter()
    it = input_pipeline(config, batch_size=batch_size, seed=0, shard_index=0, shard_count=1,
                        worker_count=worker_count)
    next(it)
    first = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(batches):
        batch = next(it)
    elapsed = time.perf_counter() - start
    shape = tuple(batch["image"].shape[1:])
    del batch
    it.close()
    return {"first": first, "images_per_s": batches * batch_size / elapsed, "shape": shape}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=150)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    args = parser.parse_args(argv)
    tfds.disable_progress_bar()
    with tempfile.TemporaryDirectory() as data_dir:
        start = time.perf_counter()
        prepare_digits(data_dir)
        digits_build = time.perf_counter() - start
        start = time.perf_counter()
        SyntheticRgb32(data_dir=data_dir, file_format="array_record").download_and_prepare()
        synthetic_build = time.perf_counter() - start
        configs = {
            "digits (8x8 -> 16x16x1)": {"name": "digits", "data_dir": data_dir},
            "synthetic 32x32x3 (10k)": {"name": "synthetic_rgb32", "data_dir": data_dir,
                                        "image_size": 32, "channels": 3, "random_flip": True},
        }
        rows = []
        for label, config in configs.items():
            for workers in args.workers:
                result = measure(config, batch_size=args.batch_size, batches=args.batches,
                                 worker_count=workers)
                rows.append((label, workers, result))
    print(f"\nbuild: digits {digits_build:.1f} s, synthetic {synthetic_build:.1f} s "
          f"(batch {args.batch_size}, {args.batches} timed batches)\n")
    print("| dataset | worker_count | output shape | first batch (s) | images/s |")
    print("|---|---|---|---|---|")
    for label, workers, r in rows:
        print(f"| {label} | {workers} | {r['shape']} | {r['first']:.2f} | "
              f"{r['images_per_s']:.0f} |")


if __name__ == "__main__":
    main()
