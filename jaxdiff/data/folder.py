"""Image folders as a random-access source: `data.name = "folder:/path/to/images"`.

Layout rules:
- Files ending in .png, .jpg, .jpeg, .bmp or .webp (any case) are found recursively; names that
  start with "." (hidden files and folders) are skipped. Paths are sorted, so the order (and with
  it every shuffle) does not depend on the file system.
- If the top level has (non-hidden) subfolders, each one is a class: labels are the positions of
  the sorted subfolder names (0, 1, ...), every image below a subfolder gets its label, and
  images lying directly in the top level are an error (they would belong to no class). Without
  subfolders the images are unlabeled: label 0, `num_classes` 0.
- The only split is "train", holding every image: generative models train on all of it, and a
  holdout would silently change whenever images are added. Evaluate on the training images or
  on a separate folder.
- Each image is decoded with Pillow, rotated upright from its EXIF orientation, and converted to
  "L" (data.channels=1, ITU-R 601 luma) or "RGB" (data.channels=3; alpha is dropped, palettes
  expanded). 16-bit and float images (Pillow modes "I;16", "I", "F") cannot be converted to
  8 bits without guessing a range and are rejected.
- Every file is checked when the folder is opened, cheaply (a fraction of a millisecond per
  file): its header, the checksum of every PNG chunk (Pillow's `verify`), JPEG's end-of-image
  marker, and BMP's pixel data (uncompressed, so read in full). Damaged, unreadable or
  unconvertible files stop the run before training with their list; with
  `data.skip_bad_files=True` they are left out, and a warning gives their count. A file damaged
  in a way these checks cannot see fails when it is read, naming it (or is replaced by the next
  image with `skip_bad_files`; see `jaxdiff.data.damaged`).
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image, ImageOps

from jaxdiff.data.damaged import SKIP_OPTION, logger, read_or_skip
from jaxdiff.validation import InputError, InputFileNotFoundError

IMAGE_EXTENSIONS = (".bmp", ".jpeg", ".jpg", ".png", ".webp")
# Pillow modes that convert to 8-bit "L"/"RGB" without choosing a value range.
CONVERTIBLE_MODES = ("1", "CMYK", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBX", "RGBa",
                     "YCbCr")
PREFIX = "folder:"


def _visible(names):
    return sorted(n for n in names if not n.startswith("."))


def _images_below(root: str) -> list[str]:
    found = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = _visible(dirnames)
        found.extend(os.path.join(dirpath, f) for f in _visible(filenames)
                     if f.lower().endswith(IMAGE_EXTENSIONS))
    return sorted(found)


def _jpeg_is_complete(path: str) -> bool:
    """A JPEG ends with the end-of-image marker FF D9; a truncated one lacks it (some cameras
    append data after it, hence the search in the last 64 KiB; entropy-coded data cannot hold
    FF D9, as it stuffs every FF byte with 00)."""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - 65536))
        return b"\xff\xd9" in f.read()


def file_problem(path: str) -> str | None:
    """Why the image file at `path` cannot be used (a short reason), or None if it passes the
    cheap checks described in the module docstring."""
    try:
        with Image.open(path) as image:
            mode, kind = image.mode, image.format
            if kind == "BMP":
                image.load()
            else:
                image.verify()
    # Pillow raises many types for damaged files (OSError, SyntaxError, struct.error, ...).
    except Exception as error:  # noqa: BLE001 - reported with the file name
        return f"cannot read image file: {type(error).__name__}: {error}"
    if kind == "JPEG" and not _jpeg_is_complete(path):
        return "truncated JPEG (no end-of-image marker)"
    if mode not in CONVERTIBLE_MODES:
        return (f"Pillow mode {mode!r} cannot be converted to 8-bit grey or RGB (data.channels 1 "
                f"or 3) without guessing a value range; accepted modes are "
                f"{list(CONVERTIBLE_MODES)}")
    return None


def _bad_files_message(root: str, bad: dict[str, str], total: int, shown: int = 20) -> str:
    listed = "; ".join(f"{path!r}: {why}" for path, why in list(bad.items())[:shown])
    more = f"; and {len(bad) - shown} more" if len(bad) > shown else ""
    return (f"{len(bad)} of {total} image files in {root!r} cannot be used: {listed}{more}. Fix "
            f"or remove them, or set --config.{SKIP_OPTION}=True to train without them")


def scan_folder(root: str, skip_bad_files: bool = False
                ) -> tuple[list[str], list[int], list[str]]:
    """Returns (image paths, labels, class names) of an image folder, checking every file.

    Raises InputFileNotFoundError if `root` is not a folder, InputError if it holds no images,
    if a class subfolder is empty, if images lie next to class subfolders, or if files cannot be
    used (all listed; with `skip_bad_files` they are left out instead, with a warning).
    """
    root = os.path.expanduser(root)
    if not os.path.isdir(root):
        raise InputFileNotFoundError(
            f"image folder {root!r} (from data.name='{PREFIX}{root}') does "
            f"not exist or is not a folder")
    entries = _visible(os.listdir(root))
    classes = [e for e in entries if os.path.isdir(os.path.join(root, e))]
    top_images = [os.path.join(root, e) for e in entries if e.lower().endswith(IMAGE_EXTENSIONS)
                  and not os.path.isdir(os.path.join(root, e))]
    if classes:
        if top_images:
            raise InputError(f"image folder {root!r} has class subfolders {classes} and also "
                             f"{len(top_images)} images at its top level (e.g. "
                             f"{top_images[0]!r}); move them into a class subfolder, or use a "
                             f"folder without subfolders for unlabeled images")
        paths, labels = [], []
        for label, name in enumerate(classes):
            found = _images_below(os.path.join(root, name))
            if not found:
                raise InputError(f"class subfolder {os.path.join(root, name)!r} of image folder "
                                 f"{root!r} holds no images ({', '.join(IMAGE_EXTENSIONS)}); "
                                 f"remove it or add images (classes are the sorted subfolders "
                                 f"{classes})")
            paths.extend(found)
            labels.extend([label] * len(found))
    else:
        paths, labels = top_images, [0] * len(top_images)
    if not paths:
        raise InputError(f"image folder {root!r} holds no images; accepted extensions are "
                         f"{list(IMAGE_EXTENSIONS)} (searched recursively, hidden files skipped)")
    bad = {path: why for path in paths if (why := file_problem(path)) is not None}
    if bad and not skip_bad_files:
        raise InputError(_bad_files_message(root, bad, len(paths)))
    if bad:
        logger.warning("skipped %d of %d image files in %r that cannot be used (%s=True); "
                       "the first: %r (%s)", len(bad), len(paths), root, SKIP_OPTION,
                       *next(iter(bad.items())))
        kept = [i for i, path in enumerate(paths) if path not in bad]
        if not kept:
            raise InputError(_bad_files_message(root, bad, len(paths)))
        paths, labels = [paths[i] for i in kept], [labels[i] for i in kept]
    return paths, labels, classes


class FolderSource:
    """Random-access source over image files: record i is {"image": uint8 (H, W, C), "label"}.

    Picklable (only paths and labels), so grain worker processes can read it. A file that cannot
    be decoded stops the run naming it, or with `skip_bad_files` is replaced by the next image.
    """

    def __init__(self, paths: list[str], labels: list[int], channels: int,
                 skip_bad_files: bool = False):
        self._paths = list(paths)
        self._labels = list(labels)
        self._mode = {1: "L", 3: "RGB"}[channels]
        self._skip_bad_files = skip_bad_files
        self._reported: set[int] = set()

    def __len__(self) -> int:
        return len(self._paths)

    def _read(self, index: int) -> dict:
        with Image.open(self._paths[index]) as image:
            image = ImageOps.exif_transpose(image).convert(self._mode)
            array = np.asarray(image, dtype=np.uint8)
        if array.ndim == 2:
            array = array[..., None]
        return {"image": array, "label": self._labels[index]}

    def __getitem__(self, index: int) -> dict:
        return read_or_skip(self._read, index, len(self), self._describe, self._skip_bad_files,
                            self._reported)

    def _describe(self, index: int) -> str:
        return f"image file {self._paths[index]!r}"

    def __repr__(self) -> str:
        return f"FolderSource({len(self)} images, mode={self._mode!r})"
