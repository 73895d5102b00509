"""Captions of image folders (`metadata.jsonl`) and the caption column of a whole split.

An image folder is captioned by a `metadata.jsonl` in its top level, one JSON object a line, as
the common text-to-image folder convention has it: `{"file_name": "cats/001.png", "text": "a
cat"}` (file names relative to the folder); `data.caption_key` names the field that holds the
caption ("text"). Every image must have a line: a missing one is an error naming the files.
"""

from __future__ import annotations

import json
import os

import numpy as np

from jaxdiff.validation import InputError, InputFileNotFoundError

METADATA_FILE = "metadata.jsonl"


def folder_captions(root: str, paths: list[str], caption_key: str) -> list[str]:
    """The caption of each image path (absolute or below `root`) from `<root>/metadata.jsonl`."""
    metadata = os.path.join(root, METADATA_FILE)
    if not os.path.isfile(metadata):
        raise InputFileNotFoundError(
            f"data.caption_key={caption_key!r} asks for captions, but the folder {root!r} has no "
            f"{METADATA_FILE} (one JSON object a line: {{\"file_name\": \"a.png\", "
            f"\"{caption_key}\": \"a caption\"}})")
    by_name = {}
    with open(metadata, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                name, text = row["file_name"], row[caption_key]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise InputError(f"{metadata} line {number}: each line must be a JSON object "
                                 f"with 'file_name' and {caption_key!r}; got {line.strip()!r:.200}"
                                 f" ({type(e).__name__}: {e})") from None
            if not isinstance(text, str):
                raise InputError(f"{metadata} line {number}: {caption_key!r} must be a string; "
                                 f"got {text!r:.100}")
            by_name[os.path.normpath(name)] = text
    captions, missing = [], []
    for path in paths:
        name = os.path.normpath(os.path.relpath(path, root))
        if name not in by_name:
            missing.append(name)
        captions.append(by_name.get(name, ""))
    if missing:
        raise InputError(f"{len(missing)} image(s) of {root!r} have no line in {METADATA_FILE}: "
                         f"{missing[:10]}{' ...' if len(missing) > 10 else ''}")
    return captions


class CaptionedSource:
    """Adds "caption" (from a list aligned with the source's indices) to each record."""

    def __init__(self, source, captions: list[str]):
        self._source, self._captions = source, captions

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index: int) -> dict:
        return {**self._source[index], "caption": self._captions[index]}

    def read_many(self, indices: list[int]) -> list[dict]:
        from jaxdiff.data.pipeline import read_records

        records = read_records(self._source, indices)
        return [{**r, "caption": self._captions[i]} for r, i in zip(records, indices)]


def as_text(value) -> str:
    """A caption as read back from TFDS (bytes, numpy bytes or str) -> str."""
    value = value.item() if isinstance(value, np.ndarray) else value
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def load_captions(data_config, split: str) -> list[str]:
    """Every caption of `split`, in split order (needs data.caption_key)."""
    from jaxdiff.data.pipeline import read_records
    from jaxdiff.data.sources import open_dataset

    opened = open_dataset(data_config)
    if opened.options.caption_key is None:
        raise InputError(f"dataset {opened.info.name!r}: set data.caption_key to the feature (or "
                         f"{METADATA_FILE} field) that holds the captions")
    source = opened.source(split)
    captions = []
    for start in range(0, len(source), 1024):
        records = read_records(source, list(range(start, min(start + 1024, len(source)))))
        captions.extend(as_text(r["caption"]) for r in records)
    return captions
