"""One grain pipeline for every dataset: shuffle, repeat, shard, transform, batch, prefetch.

The example stream of a run is the concatenation of epochs; each epoch is a fresh permutation
of the whole split (grain's global index shuffle, seeded from (seed, epoch)), so examples never
mix across epochs. Step s uses stream positions [s * G, (s + 1) * G) with the global batch
G = batch_size * shard_count, and process p takes the p-th block of batch_size consecutive
positions, [s * G + p * batch_size, s * G + (p + 1) * batch_size): the processes' rows, put side
by side in process order (as `jax.make_array_from_process_local_data` does), are the global batch
one process would read, so a run gives the same numbers on any number of processes. Processes
never share an example in a step, and together they see every example of every epoch exactly
once. A batch may hold the last examples of one epoch and the
first of the next; with a finite `num_epochs` and `drop_remainder=True` the stream is cut to a
whole number of global batches, so every process yields the same number of batches.

Per-example work (decode, uint8 -> float32 in [-1, 1], channel conversion, crop + resize, the
optional flip) is pure NumPy/Pillow in `jaxdiff.data.transforms`. The flip decision is a
function of (seed, stream position), i.e. of (seed, epoch, index within epoch).

The iterator's `get_state()` is a small JSON-serialisable dict; `set_state()` on a fresh
pipeline built with the same arguments continues with exactly the same batches.

Example:
  >>> from jaxdiff.configs import get_config
  >>> it = input_pipeline(get_config("digits").data, batch_size=8, seed=0)
  >>> batch = next(it)
  >>> batch["image"].shape, batch["image"].dtype, batch["label"].shape, batch["label"].dtype
  ((8, 16, 16, 1), dtype('float32'), (8,), dtype('int32'))
"""

from __future__ import annotations

from typing import Any

import grain
import numpy as np

from jaxdiff.data.sources import DatasetInfo, open_dataset
from jaxdiff.data.transforms import flip_bit, preprocess
from jaxdiff.validation import InputError, check_int


def _grain_seed(seed: int) -> int:
    """Hashes the user seed to grain's 32-bit seed (grain uses seed + epoch for epoch `epoch`,
    so hashing keeps seeds s and s + 1 from sharing all but one epoch order)."""
    return int(np.random.SeedSequence(int(seed)).generate_state(1, np.uint32)[0])


def read_records(source, indices: list[int]) -> list[dict]:
    """Reads records by index, batched where the source supports it (array_record reads the
    batch in parallel threads)."""
    read_many = getattr(source, "read_many", None)
    return read_many(indices) if read_many else [source[i] for i in indices]


class _ReadAndTransform:
    """grain map: a batch of (stream positions, source indices) -> a model-ready batch.

    Reading a whole batch at once lets array_record fetch its records in parallel; the flip of
    each example is decided by (seed, stream position).
    """

    def __init__(self, source, size: int, channels: int, random_flip: bool, seed: int):
        self.source, self.size, self.channels = source, size, channels
        self.random_flip, self.seed = random_flip, seed

    def __call__(self, batch) -> dict:
        positions, indices = batch
        records = read_records(self.source, [int(i) for i in indices])
        images = [preprocess(r["image"], size=self.size, channels=self.channels,
                             flip=self.random_flip and flip_bit(self.seed, int(p)))
                  for r, p in zip(records, positions)]
        # "index": where each example sits in its split (latent runs look up cached latents)
        return {"image": np.stack(images),
                "label": np.array([r["label"] for r in records], np.int32),
                "index": np.asarray(indices, np.int64)}


def _with_position(position: int, index) -> tuple[int, int]:
    return position, int(index)


def _mark_absl_flags_parsed() -> None:
    """grain 0.2.18's `mp_prefetch` reads an absl flag, which raises UnparsedFlagAccessError in
    programs that do not parse absl flags (google/grain#1355, fixed after 0.2.18). Marking the
    flags parsed keeps their defaults; programs using `absl.app` have parsed them already."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def input_pipeline(data_config: Any, *, split: str = "train", batch_size: int, seed: int,
                   shard_index: int | None = None, shard_count: int | None = None,
                   num_epochs: int | None = None, drop_remainder: bool = True,
                   shuffle: bool = True, worker_count: int | None = None,
                   prefetch: int = 2):
    """A grain iterator of batches {"image": float32 (B, H, W, C) in [-1, 1], "label": int32 (B,)}.

    Args:
      data_config: ConfigDict (or attribute object / mapping) with name, data_dir, image_size,
        channels, random_flip, image_key, label_key, worker_count; missing keys use defaults.
      split: a split name of the dataset (TFDS slicing like "train[:90%]" also works for TFDS).
      batch_size: examples per batch of THIS process (the global batch is
        batch_size * shard_count).
      seed: int >= 0; fixes the shuffle of every epoch and the flips.
      shard_index, shard_count: this process and the number of processes; default
        `jax.process_index()` and `jax.process_count()`.
      num_epochs: None repeats forever; else the number of passes over the split.
      drop_remainder: drop a last incomplete batch (must be True when shard_count > 1, so all
        processes yield equally many, equally sized batches).
      shuffle: False reads in split order (each epoch the same order).
      worker_count: background worker processes (grain `mp_prefetch`); None reads
        data.worker_count (default 0: batches are made in this process by `prefetch` threads).
      prefetch: batches read ahead (threads in this process, or per worker); 0 reads on demand.

    Returns:
      A `grain.DatasetIterator`: `next(it)` gives a batch; `it.get_state()` / `it.set_state()`.
    """
    import jax

    check_int(batch_size, "batch_size", 1)
    check_int(seed, "seed", 0)
    check_int(prefetch, "prefetch", 0)
    shard_index = jax.process_index() if shard_index is None else shard_index
    shard_count = jax.process_count() if shard_count is None else shard_count
    check_int(shard_count, "shard_count", 1)
    if not isinstance(shard_index, (int, np.integer)) or not 0 <= shard_index < shard_count:
        raise InputError(f"shard_index must be in [0, shard_count) = [0, {shard_count}); got "
                         f"{shard_index!r}")
    if num_epochs is not None:
        check_int(num_epochs, "num_epochs", 1)
    if not drop_remainder and shard_count > 1:
        raise InputError(f"drop_remainder=False needs shard_count == 1 (got {shard_count}): "
                         f"the last, smaller batch would differ between processes")
    opened = open_dataset(data_config)
    options = opened.options
    worker_count = options.worker_count if worker_count is None else worker_count
    check_int(worker_count, "worker_count", 0)
    source = opened.source(split)
    num_examples = len(source)
    global_batch = batch_size * shard_count
    if num_examples == 0:
        raise InputError(f"split {split!r} of dataset {opened.info.name!r} has no examples")
    if num_epochs is not None and drop_remainder and num_examples * num_epochs < global_batch:
        raise InputError(f"global batch batch_size * shard_count = {batch_size} * {shard_count} "
                         f"= {global_batch} exceeds the {num_examples * num_epochs} examples of "
                         f"{num_epochs} epoch(s) of split {split!r}: no full batch; lower "
                         f"batch_size or raise num_epochs")

    # The stream holds source indices; records are read per batch, after sharding.
    ds = grain.MapDataset.range(num_examples)
    if shuffle:
        ds = ds.shuffle(seed=_grain_seed(seed))
    ds = ds.repeat(num_epochs)
    if num_epochs is not None and drop_remainder:
        ds = ds[: len(ds) // global_batch * global_batch]
    ds = ds.map_with_index(_with_position)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    ds = ds[shard_index::shard_count]  # this process's block of each global batch
    ds = ds.map(_ReadAndTransform(source, options.image_size, options.channels,
                                  bool(options.random_flip), int(seed)))
    read = grain.ReadOptions(num_threads=min(prefetch, 4) if worker_count == 0 else 0,
                             prefetch_buffer_size=prefetch)
    it_ds = ds.to_iter_dataset(read)
    if worker_count > 0:
        _mark_absl_flags_parsed()
        it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(
            num_workers=worker_count, per_worker_buffer_size=max(prefetch, 1)))
    return iter(it_ds)


def dataset_info(data_config: Any) -> DatasetInfo:
    """Shape, classes and split sizes of the configured dataset, from metadata (no full read).

    Digits are built on first use; a folder is listed and its image headers are checked.
    """
    return open_dataset(data_config).info


def load_split(data_config: Any, split: str, max_examples: int | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
    """A whole split as arrays, for evaluation: same transforms, no shuffle, no flip.

    Returns:
      (images float32 (N, H, W, C) in [-1, 1], labels int32 (N,)), in split order;
      N = min(split size, max_examples).
    """
    if max_examples is not None:
        check_int(max_examples, "max_examples", 1)
    opened = open_dataset(data_config)
    options = opened.options
    source = opened.source(split)
    count = len(source) if max_examples is None else min(len(source), max_examples)
    size, channels = options.image_size, options.channels
    images = np.empty((count, size, size, channels), np.float32)
    labels = np.empty((count,), np.int32)
    for start in range(0, count, 256):
        records = read_records(source, list(range(start, min(start + 256, count))))
        for i, record in enumerate(records, start):
            images[i] = preprocess(record["image"], size=size, channels=channels, flip=False)
            labels[i] = record["label"]
    return images, labels
