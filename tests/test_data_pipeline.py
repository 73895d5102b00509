"""The grain pipeline: epochs, sharding, exact resume, flips, batch format, argument checks.

The dataset here is a tiny array_record TFDS dataset whose example i is a 2x2 image filled with
the value i (and label i % 10), so every batch can be decoded back to the example indices.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow_datasets as tfds

from jaxdiff.data import input_pipeline

NUM = 50


class IndexedToy(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Example i: image (2, 2, 1) uint8 filled with i, label i % 10; 'test' has 10 examples."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Tensor(shape=(2, 2, 1), dtype=np.uint8),
                "label": tfds.features.ClassLabel(num_classes=10),
            }),
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(NUM), "test": self._generate_examples(10)}

    def _generate_examples(self, n):
        for i in range(n):
            yield i, {"image": np.full((2, 2, 1), i, np.uint8), "label": i % 10}


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    IndexedToy(data_dir=data_dir, file_format="array_record").download_and_prepare()
    return {"name": "indexed_toy", "data_dir": data_dir, "image_size": 2, "channels": 1}


def indices(batch) -> np.ndarray:
    """Example index of each image in a batch (undoes x -> x / 127.5 - 1)."""
    values = np.round((batch["image"][:, 0, 0, 0].astype(np.float64) + 1.0) * 127.5)
    return values.astype(np.int64)


def take(it, n):
    return [next(it) for _ in range(n)]


def test_batches_are_float32_in_range_with_int32_labels(config):
    batch = next(input_pipeline(config, batch_size=8, seed=0, shard_index=0, shard_count=1))
    assert batch["image"].dtype == np.float32 and batch["image"].shape == (8, 2, 2, 1)
    assert batch["label"].dtype == np.int32 and batch["label"].shape == (8,)
    expected = indices(batch).astype(np.float64) / 127.5 - 1.0
    np.testing.assert_allclose(batch["image"][:, 1, 1, 0], expected, atol=1e-6)
    np.testing.assert_array_equal(batch["label"], indices(batch) % 10)


def test_every_epoch_is_a_permutation_and_epochs_differ(config):
    it = input_pipeline(config, batch_size=5, seed=3, shard_index=0, shard_count=1)
    stream = np.concatenate([indices(b) for b in take(it, 3 * NUM // 5)])
    epochs = stream.reshape(3, NUM)
    for epoch in epochs:
        np.testing.assert_array_equal(np.sort(epoch), np.arange(NUM))
    assert not np.array_equal(epochs[0], epochs[1])
    assert not np.array_equal(epochs[1], epochs[2])
    assert not np.array_equal(epochs[0], np.arange(NUM))


def test_two_processes_split_each_epoch_exactly(config):
    # Global batch 2 * 4 = 8 does not divide 50, so steps straddle epoch boundaries.
    steps = 3 * NUM // 8
    shards = [np.stack([indices(b) for b in take(
        input_pipeline(config, batch_size=4, seed=1, shard_index=p, shard_count=2), steps)])
        for p in range(2)]
    for step in range(steps):
        assert not set(shards[0][step]) & set(shards[1][step])
    # Put the two processes' blocks side by side: the global example stream.
    stream = np.concatenate(shards, axis=1).reshape(-1)
    for epoch in range(len(stream) // NUM):
        np.testing.assert_array_equal(np.sort(stream[epoch * NUM:(epoch + 1) * NUM]),
                                      np.arange(NUM))


def test_finite_epochs_give_equal_batch_counts_on_every_process(config):
    counts = [sum(1 for _ in input_pipeline(config, batch_size=4, seed=0, shard_index=p,
                                            shard_count=3, num_epochs=2)) for p in range(3)]
    assert counts == [2 * NUM // 12] * 3


def test_keep_remainder_yields_whole_split_once(config):
    batches = list(input_pipeline(config, batch_size=8, seed=0, shard_index=0, shard_count=1,
                                  num_epochs=1, drop_remainder=False))
    assert [len(b["label"]) for b in batches] == [8] * 6 + [2]
    np.testing.assert_array_equal(np.sort(np.concatenate([indices(b) for b in batches])),
                                  np.arange(NUM))


def test_same_seed_same_batches_other_seed_other_order(config):
    def first(seed):
        it = input_pipeline(config, batch_size=NUM, seed=seed, shard_index=0, shard_count=1)
        return indices(next(it))

    np.testing.assert_array_equal(first(7), first(7))
    assert not np.array_equal(first(7), first(8))


def test_unshuffled_reads_in_split_order(config):
    it = input_pipeline(config, batch_size=10, seed=0, shard_index=0, shard_count=1,
                        shuffle=False)
    np.testing.assert_array_equal(indices(next(it)), np.arange(10))


@pytest.mark.parametrize("prefetch", [0, 2])
def test_restored_state_replays_the_next_batches_bitwise(config, prefetch):
    def make():
        return input_pipeline({**config, "random_flip": True}, batch_size=6, seed=5,
                              shard_index=1, shard_count=2, prefetch=prefetch)

    it = make()
    take(it, 7)
    state = json.loads(json.dumps(it.get_state()))  # must survive JSON
    expected = take(it, 6)
    fresh = make()
    fresh.set_state(state)
    for want, got in zip(expected, take(fresh, 6)):
        np.testing.assert_array_equal(want["image"], got["image"])
        np.testing.assert_array_equal(want["label"], got["label"])


def test_flips_are_deterministic_and_mirror_the_width_axis(tmp_path):
    from jaxdiff.data.transforms import flip_bit

    # Width-asymmetric image: left column 0, right column 255 -> -1 / +1 after scaling.
    image = np.zeros((2, 2, 1), np.uint8)
    image[:, 1] = 255
    from jaxdiff.data.transforms import preprocess

    flipped = preprocess(image, size=2, channels=1, flip=True)
    np.testing.assert_array_equal(flipped[..., 0], [[1.0, -1.0], [1.0, -1.0]])
    bits = [flip_bit(11, p) for p in range(2000)]
    assert bits == [flip_bit(11, p) for p in range(2000)]
    assert 0.45 < np.mean(bits) < 0.55
    assert bits != [flip_bit(12, p) for p in range(2000)]


@pytest.mark.parametrize("kwargs, match", [
    ({"batch_size": 0}, "batch_size must be an integer >= 1; got 0"),
    ({"batch_size": 2.5}, "batch_size must be an integer"),
    ({"shard_index": 2, "shard_count": 2}, r"shard_index must be in \[0, shard_count\)"),
    ({"shard_index": -1, "shard_count": 2}, "shard_index must be in"),
    ({"shard_count": 0, "shard_index": 0}, "shard_count must be an integer >= 1"),
    ({"seed": -1}, "seed must be an integer >= 0"),
    ({"num_epochs": 0}, "num_epochs must be an integer >= 1"),
    ({"shard_count": 2, "shard_index": 0, "drop_remainder": False}, "drop_remainder=False"),
    ({"batch_size": 30, "shard_count": 2, "shard_index": 0, "num_epochs": 1},
     "global batch batch_size \\* shard_count = 30 \\* 2 = 60 exceeds the 50 examples"),
    ({"split": "validation"}, r"unknown split 'validation' .* \['test', 'train'\]"),
    ({"worker_count": -1}, "worker_count must be an integer >= 0"),
])
def test_bad_pipeline_arguments_raise_naming_the_value(config, kwargs, match):
    args = {"batch_size": 4, "seed": 0, "shard_index": 0, "shard_count": 1, **kwargs}
    with pytest.raises(ValueError, match=match):
        input_pipeline(config, **args)


@pytest.mark.parametrize("key, value, match", [
    ("image_size", 0, "data.image_size must be a positive integer; got 0"),
    ("channels", 2, r"data.channels must be one of \[1, 3\]; got 2"),
    ("random_flip", "yes", "data.random_flip must be True or False"),
    ("name", "", "data.name must be a non-empty string"),
])
def test_bad_data_config_values_raise(config, key, value, match):
    with pytest.raises(ValueError, match=match):
        input_pipeline({**config, key: value}, batch_size=4, seed=0, shard_index=0,
                       shard_count=1)


def test_worker_processes_give_the_same_batches_and_restore_exactly(config):
    def make(workers):
        return input_pipeline({**config, "random_flip": True}, batch_size=4, seed=2,
                              shard_index=0, shard_count=1, worker_count=workers)

    reference = take(make(0), 8)
    it = make(2)
    first = take(it, 3)
    state = json.loads(json.dumps(it.get_state()))
    it.close()
    fresh = make(2)
    fresh.set_state(state)
    rest = take(fresh, 5)
    fresh.close()
    for want, got in zip(reference, first + rest):
        np.testing.assert_array_equal(want["image"], got["image"])
        np.testing.assert_array_equal(want["label"], got["label"])
