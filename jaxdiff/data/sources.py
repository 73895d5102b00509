"""Resolving `data.name` to a random-access source of {"image": uint8 (H, W, C), "label": int}.

Three kinds, looked up in one registry of name forms:
- "digits": the embedded 8x8 digits, a TFDS dataset (`JaxdiffDigits`) built into data_dir on
  first use;
- "folder:<path>": an image folder (see `jaxdiff.data.folder`);
- any other name: a TFDS dataset prepared beforehand in array_record format, e.g. "mnist",
  "cifar10", "mnist:3.0.1", read with `builder.as_data_source` (no TensorFlow needed to read,
  also for `tfds.features.Image` features: TFDS decodes them with Pillow).

data.data_dir None means the TFDS default (`$TFDS_DATA_DIR`, else ~/tensorflow_datasets), for
digits too.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from jaxdiff.data import folder as folder_lib
from jaxdiff.data.damaged import read_or_skip
from jaxdiff.data.transforms import CHANNELS
from jaxdiff.validation import InputError, InputFileNotFoundError

DIGITS = "digits"
SHAPES = "shapes"
NAME_FORMS = {
    DIGITS: "the embedded 8x8 digits (built on first use, no download)",
    SHAPES: "the embedded captioned 32x32 shapes (built on first use, no download)",
    folder_lib.PREFIX + "<path>": "a folder of .png/.jpg/.jpeg/.bmp/.webp images",
    "<tfds name>": "a TFDS dataset prepared in data.data_dir, e.g. 'mnist' or 'cifar10'",
}
def prepare_hint(name: str = "<name>") -> str:
    """How to prepare a TFDS dataset so that jaxdiff can read it."""
    return (f"prepare it on a machine with internet and TensorFlow (`pip install tensorflow "
            f"tensorflow-datasets`) with `tfds build {name} --data_dir=<dir> "
            f"--file_format=array_record`, copy <dir> to this machine and set "
            f"data.data_dir=<dir> (reading needs no TensorFlow)")


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What training needs to know about a dataset, after jaxdiff's transforms.

    Attributes:
      name: data.name as given.
      image_shape: (H, W, C) of the images the pipeline yields: (image_size, image_size, channels).
      num_classes: number of classes; 0 when the dataset has no labels (labels are then 0).
      num_train_examples: examples in the "train" split (0 if there is none).
      splits: the split names, sorted.
      split_sizes: split name -> number of examples.
    """

    name: str
    image_shape: tuple[int, int, int]
    num_classes: int
    num_train_examples: int
    splits: tuple[str, ...]
    split_sizes: Mapping[str, int]


@dataclasses.dataclass(frozen=True)
class DataOptions:
    """The data config's keys, read with defaults and checked (see `options_from_config`)."""

    name: str = DIGITS
    data_dir: str | None = None
    image_size: int = 16
    channels: int = 1
    random_flip: bool = False
    image_key: str | None = None
    label_key: str | None = None
    caption_key: str | None = None
    worker_count: int = 0
    skip_bad_files: bool = False


def _get(config: Any, key: str, default: Any) -> Any:
    if config is None:
        return default
    if hasattr(config, "get"):
        value = config.get(key, default)
    else:
        value = getattr(config, key, default)
    return default if value is None else value


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def options_from_config(config: Any) -> DataOptions:
    """Reads a data ConfigDict (or any attribute object / mapping; missing keys use defaults)."""
    d = DataOptions()
    options = DataOptions(**{f.name: _get(config, f.name, getattr(d, f.name))
                             for f in dataclasses.fields(DataOptions)})
    if not isinstance(options.name, str) or not options.name.strip():
        raise InputError(f"data.name must be a non-empty string; got {options.name!r}; choose "
                         f"one of {sorted(NAME_FORMS)}")
    if not _is_int(options.image_size) or options.image_size < 1:
        raise InputError(f"data.image_size must be a positive integer; got "
                         f"{options.image_size!r}")
    if not _is_int(options.channels) or options.channels not in CHANNELS:
        raise InputError(f"data.channels must be one of {list(CHANNELS)}; got "
                         f"{options.channels!r}")
    if options.skip_bad_files not in (True, False):
        raise InputError(f"data.skip_bad_files must be True or False; got "
                         f"{options.skip_bad_files!r}")
    if options.random_flip not in (True, False):
        raise InputError(f"data.random_flip must be True or False; got {options.random_flip!r}")
    if not _is_int(options.worker_count) or options.worker_count < 0:
        raise InputError(f"data.worker_count must be an integer >= 0; got "
                         f"{options.worker_count!r}")
    for key in ("image_key", "label_key", "caption_key"):
        value = getattr(options, key)
        if value is not None and not isinstance(value, str):
            raise InputError(f"data.{key} must be a feature name (string); got {value!r}")
    return options


class TfdsSource:
    """Adapts a TFDS data source to records {"image": uint8 (H, W, C), "label": int}.

    A record that fails to decode stops the run naming it (`name`, e.g. "split 'train' of
    dataset 'cifar10'", and its index), or with `skip_bad_files` is replaced by the next record
    that decodes, with a warning (see `jaxdiff.data.damaged`).
    """

    def __init__(self, data_source, image_key: str, label_key: str | None, name: str = "",
                 skip_bad_files: bool = False, caption_key: str | None = None):
        self._source = data_source
        self._caption_key = caption_key
        self._image_key = image_key
        self._label_key = label_key
        self._name = name or repr(data_source)
        self._skip_bad_files = skip_bad_files
        self._reported: set[int] = set()

    def __len__(self) -> int:
        return len(self._source)

    def _record(self, example) -> dict:
        image = np.asarray(example[self._image_key])
        if image.ndim == 2:
            image = image[..., None]
        label = int(example[self._label_key]) if self._label_key else 0
        if self._caption_key:
            from jaxdiff.data.captions import as_text

            return {"image": image, "label": label,
                    "caption": as_text(example[self._caption_key])}
        return {"image": image, "label": label}

    def _describe(self, index: int) -> str:
        return f"record {index} of {self._name}"

    def __getitem__(self, index: int) -> dict:
        # Only the TFDS read (which decodes the features) is guarded: a failure there is the
        # data's; one in `_record` is jaxdiff's and keeps its traceback.
        example = read_or_skip(self._source.__getitem__, index, len(self), self._describe,
                               self._skip_bad_files, self._reported)
        return self._record(example)

    def read_many(self, indices: list[int]) -> list[dict]:
        """Batched read: array_record fetches the records in parallel threads. If any record of
        the batch fails to decode, the batch is read again one record at a time, so the one
        that fails is named (or skipped)."""
        getitems = getattr(self._source, "__getitems__", None)
        if getitems is None:  # tfds.testing.mock_data's data sources read one index at a time
            return [self[i] for i in indices]
        try:
            examples = getitems(indices)
        # Decoders raise many types for damaged data; the per-record reads below report it.
        except Exception:  # noqa: BLE001
            return [self[i] for i in indices]
        return [self._record(example) for example in examples]

    def __repr__(self) -> str:
        return f"TfdsSource({self._source!r})"


@dataclasses.dataclass(frozen=True)
class OpenedDataset:
    """A resolved dataset: its info and a way to open one split as a random-access source."""

    info: DatasetInfo
    options: DataOptions
    opener: Any  # callable split -> source

    def source(self, split: str):
        check_split(split, self.info)
        return self.opener(split)


def check_split(split: str, info: DatasetInfo) -> None:
    """Accepts split names and TFDS split expressions ("train[:90%]", "train+test")."""
    if not isinstance(split, str) or not split:
        raise InputError(f"split must be one of {list(info.splits)}; got {split!r}")
    for part in split.split("+"):
        base = re.split(r"\[", part, maxsplit=1)[0].strip()
        if base not in info.splits:
            raise InputError(f"unknown split {split!r} of dataset {info.name!r}; choose one of "
                             f"{list(info.splits)}")


def _tfds_builder(name: str, data_dir: str | None):
    import tensorflow_datasets as tfds

    data_dir = os.path.expanduser(data_dir or tfds.core.constants.get_default_data_dir())
    if name == DIGITS:
        from jaxdiff.data.digits_builder import prepare_digits

        return prepare_digits(data_dir)
    if name == SHAPES:
        from jaxdiff.data.shapes_builder import prepare_shapes

        return prepare_shapes(data_dir)
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise InputError(f"unknown dataset {name!r}: not a TFDS dataset and not prepared in "
                         f"data_dir {data_dir!r}; data.name accepts {sorted(NAME_FORMS)} "
                         f"({'; '.join(f'{k}: {v}' for k, v in NAME_FORMS.items())}). For a TFDS "
                         f"dataset, {prepare_hint()}") from None
    if not builder.is_prepared():
        raise InputFileNotFoundError(
            f"TFDS dataset {name!r} is not prepared in data_dir "
            f"{data_dir!r} (looked for {builder.data_dir}/dataset_info.json);"
            f" {prepare_hint(name)}")
    file_format = getattr(builder.info.file_format, "value", builder.info.file_format)
    if file_format != "array_record":
        raise InputError(f"TFDS dataset {name!r} in {builder.data_dir} is stored as "
                         f"{file_format!r}, but jaxdiff reads it by random access, which needs "
                         f"'array_record'; prepare it again with `tfds build {name} "
                         f"--data_dir=<dir> --file_format=array_record`")
    return builder


def _open_tfds(options: DataOptions) -> OpenedDataset:
    builder = _tfds_builder(options.name, options.data_dir)
    features = builder.info.features
    keys = sorted(features.keys()) if hasattr(features, "keys") else []
    image_key = options.image_key or "image"
    if image_key not in keys:
        raise InputError(f"dataset {options.name!r} has no image feature {image_key!r} "
                         f"(data.image_key); its features are {keys}")
    image_feature = features[image_key]
    shape = tuple(image_feature.shape)
    have = 1 if len(shape) == 2 else shape[-1] if len(shape) == 3 else None
    if have not in CHANNELS:
        raise InputError(f"feature {image_key!r} of dataset {options.name!r} has shape {shape}; "
                         f"jaxdiff needs (H, W) or (H, W, C) images with C in {list(CHANNELS)} "
                         f"to convert them to data.channels={options.channels}")
    if np.dtype(image_feature.np_dtype) != np.uint8:
        raise InputError(f"feature {image_key!r} of dataset {options.name!r} has dtype "
                         f"{np.dtype(image_feature.np_dtype)}; jaxdiff reads uint8 images")
    if options.label_key is not None and options.label_key not in keys:
        raise InputError(f"dataset {options.name!r} has no label feature "
                         f"{options.label_key!r} (data.label_key); its features are {keys}")
    if options.caption_key is not None and options.caption_key not in keys:
        raise InputError(f"dataset {options.name!r} has no caption feature "
                         f"{options.caption_key!r} (data.caption_key); its features are {keys}")
    label_key = options.label_key or ("label" if "label" in keys else None)
    num_classes = int(getattr(features[label_key], "num_classes", 0) or 0) if label_key else 0
    sizes = {s: int(v.num_examples) for s, v in builder.info.splits.items()}

    def opener(split):
        return TfdsSource(builder.as_data_source(split=split), image_key, label_key,
                          f"split {split!r} of dataset {options.name!r}", options.skip_bad_files,
                          options.caption_key)

    return OpenedDataset(_make_info(options, num_classes, sizes), options, opener)


def _open_folder(options: DataOptions) -> OpenedDataset:
    paths, labels, classes = folder_lib.scan_folder(options.name[len(folder_lib.PREFIX):],
                                                    options.skip_bad_files)

    captions = None
    if options.caption_key is not None:
        from jaxdiff.data.captions import folder_captions

        captions = folder_captions(options.name[len(folder_lib.PREFIX):], paths,
                                   options.caption_key)

    def opener(split):
        del split  # "train" is the only split.
        source = folder_lib.FolderSource(paths, labels, options.channels, options.skip_bad_files)
        if captions is None:
            return source
        from jaxdiff.data.captions import CaptionedSource

        return CaptionedSource(source, captions)

    return OpenedDataset(_make_info(options, len(classes), {"train": len(paths)}), options,
                         opener)


def _make_info(options: DataOptions, num_classes: int, sizes: Mapping[str, int]) -> DatasetInfo:
    size = options.image_size
    return DatasetInfo(name=options.name, image_shape=(size, size, options.channels),
                       num_classes=num_classes, num_train_examples=sizes.get("train", 0),
                       splits=tuple(sorted(sizes)), split_sizes=dict(sizes))


def open_dataset(data_config: Any) -> OpenedDataset:
    """Resolves data_config (name, data_dir, ...) into an `OpenedDataset`; checks everything."""
    options = options_from_config(data_config)
    if options.name.startswith(folder_lib.PREFIX):
        return _open_folder(options)
    return _open_tfds(options)
