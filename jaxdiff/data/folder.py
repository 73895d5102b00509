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
  8 bits without guessing a range and are rejected. Every file's header is read when the folder
  is opened (tens of microseconds per file), so unreadable or unsupported files fail before
  training starts.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

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


def _check_header(path: str) -> None:
    try:
        with Image.open(path) as image:
            mode = image.mode
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"cannot read image file {path!r}: {error}") from None
    if mode not in CONVERTIBLE_MODES:
        raise ValueError(f"image {path!r} has Pillow mode {mode!r}, which cannot be converted to "
                         f"8-bit grey or RGB (data.channels 1 or 3) without guessing a value "
                         f"range; accepted modes are {list(CONVERTIBLE_MODES)}")


def scan_folder(root: str) -> tuple[list[str], list[int], list[str]]:
    """Returns (image paths, labels, class names) of an image folder, checking every header.

    Raises FileNotFoundError if `root` is not a folder, ValueError if it holds no images, if a
    class subfolder is empty, if images lie next to class subfolders, or if a file cannot be
    read or converted.
    """
    root = os.path.expanduser(root)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"image folder {root!r} (from data.name='{PREFIX}{root}') does "
                                f"not exist or is not a folder")
    entries = _visible(os.listdir(root))
    classes = [e for e in entries if os.path.isdir(os.path.join(root, e))]
    top_images = [os.path.join(root, e) for e in entries if e.lower().endswith(IMAGE_EXTENSIONS)
                  and not os.path.isdir(os.path.join(root, e))]
    if classes:
        if top_images:
            raise ValueError(f"image folder {root!r} has class subfolders {classes} and also "
                             f"{len(top_images)} images at its top level (e.g. "
                             f"{top_images[0]!r}); move them into a class subfolder, or use a "
                             f"folder without subfolders for unlabeled images")
        paths, labels = [], []
        for label, name in enumerate(classes):
            found = _images_below(os.path.join(root, name))
            if not found:
                raise ValueError(f"class subfolder {os.path.join(root, name)!r} of image folder "
                                 f"{root!r} holds no images ({', '.join(IMAGE_EXTENSIONS)}); "
                                 f"remove it or add images (classes are the sorted subfolders "
                                 f"{classes})")
            paths.extend(found)
            labels.extend([label] * len(found))
    else:
        paths, labels = top_images, [0] * len(top_images)
    if not paths:
        raise ValueError(f"image folder {root!r} holds no images; accepted extensions are "
                         f"{list(IMAGE_EXTENSIONS)} (searched recursively, hidden files skipped)")
    for path in paths:
        _check_header(path)
    return paths, labels, classes


class FolderSource:
    """Random-access source over image files: record i is {"image": uint8 (H, W, C), "label"}.

    Picklable (only paths and labels), so grain worker processes can read it.
    """

    def __init__(self, paths: list[str], labels: list[int], channels: int):
        self._paths = list(paths)
        self._labels = list(labels)
        self._mode = {1: "L", 3: "RGB"}[channels]

    def __len__(self) -> int:
        return len(self._paths)

    def __getitem__(self, index: int) -> dict:
        path = self._paths[index]
        with Image.open(path) as image:
            image = ImageOps.exif_transpose(image).convert(self._mode)
            array = np.asarray(image, dtype=np.uint8)
        if array.ndim == 2:
            array = array[..., None]
        return {"image": array, "label": self._labels[index]}

    def __repr__(self) -> str:
        return f"FolderSource({len(self)} images, mode={self._mode!r})"
