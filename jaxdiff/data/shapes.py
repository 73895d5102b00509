"""The embedded captioned "shapes" images: drawn from a seed, no download, pure NumPy.

Each image is 32x32 RGB, uint8, black background, with one or two filled shapes (circle, square,
triangle) in one of five colors (red, green, blue, yellow, white) at varied positions and sizes.
Captions name them: "a red circle", "a blue square left of a green triangle", "a white circle
above a yellow square". An object is a class id `color * 3 + shape` (15 classes).

Splits:
- "train": every one-object caption (15) and every two-object combination (ordered pair of
  different objects x relation) except the held-out ones;
- "test": only the held-out two-object combinations (`HELD_OUT`), for evaluating whether a model
  composes what it saw separately.

Example i of a split is drawn from `numpy.random.default_rng([seed, split code, i])`, so a split is
the same on every machine and any example can be drawn alone.

  >>> image, record = draw_example("train", 0)
  >>> image.shape, image.dtype, record["caption"]
  ((32, 32, 3), dtype('uint8'), 'a blue square left of a yellow square')
"""

from __future__ import annotations

import itertools

import numpy as np

from jaxdiff.validation import InputError, check_choice, check_int

SIZE = 32
COLORS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255),
          "yellow": (255, 255, 0), "white": (255, 255, 255)}
COLOR_NAMES = tuple(COLORS)
SHAPES = ("circle", "square", "triangle")
RELATIONS = ("left of", "above")
NUM_CLASSES = len(COLOR_NAMES) * len(SHAPES)
SPLIT_SIZES = {"train": 20000, "test": 2000}
SPLIT_CODES = {"train": 0, "test": 1}
ONE_OBJECT_FRACTION = 0.4  # of the train split


def class_id(color: str, shape: str) -> int:
    return COLOR_NAMES.index(color) * len(SHAPES) + SHAPES.index(shape)


def class_name(cls: int) -> str:
    """'red circle' for class 0."""
    return f"{COLOR_NAMES[cls // len(SHAPES)]} {SHAPES[cls % len(SHAPES)]}"


def caption(first: int, second: int = -1, relation: int = -1) -> str:
    """The caption of one object, or of `first` <relation> `second`."""
    if second < 0:
        return f"a {class_name(first)}"
    return f"a {class_name(first)} {RELATIONS[relation]} a {class_name(second)}"


def _all_pairs() -> list[tuple[int, int, int]]:
    return [(a, b, r) for a, b in itertools.permutations(range(NUM_CLASSES), 2)
            for r in range(len(RELATIONS))]


def _held_out() -> tuple[tuple[int, int, int], ...]:
    # A fixed tenth of the 420 combinations (seeded), chosen so that every object still appears
    # in train on both sides of both relations.
    pairs = _all_pairs()
    order = np.random.default_rng(1234).permutation(len(pairs))
    return tuple(sorted(pairs[i] for i in order[: len(pairs) // 10]))


HELD_OUT = _held_out()
TRAIN_PAIRS = tuple(p for p in _all_pairs() if p not in set(HELD_OUT))
ONE_OBJECT_CAPTIONS = tuple(caption(c) for c in range(NUM_CLASSES))
HELD_OUT_CAPTIONS = tuple(caption(*p) for p in HELD_OUT)


def shape_mask(shape: str, cx: float, cy: float, r: float) -> np.ndarray:
    """Bool (SIZE, SIZE) mask of a filled shape of size r centred at (cx, cy) (pixel centres at
    integer + 0.5): a disk of radius r, a square of half side 0.85 r, an upright equilateral
    triangle inscribed in a circle of radius 1.2 r."""
    ys, xs = np.mgrid[0:SIZE, 0:SIZE] + 0.5
    dx, dy = xs - cx, ys - cy
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        h = 0.85 * r
        return (np.abs(dx) <= h) & (np.abs(dy) <= h)
    R = 1.2 * r  # vertices at angles -90 (top), 30, 150 degrees; y grows downwards
    angles = np.deg2rad([-90.0, 30.0, 150.0])
    vx, vy = cx + R * np.cos(angles), cy + R * np.sin(angles)
    inside = np.ones_like(xs, bool)
    for i in range(3):
        x0, y0, x1, y1 = vx[i], vy[i], vx[(i + 1) % 3], vy[(i + 1) % 3]
        inside &= (x1 - x0) * (ys - y0) - (y1 - y0) * (xs - x0) >= 0
    return inside


def _paint(image: np.ndarray, cls: int, cx: float, cy: float, r: float) -> None:
    mask = shape_mask(SHAPES[cls % len(SHAPES)], cx, cy, r)
    image[mask] = COLORS[COLOR_NAMES[cls // len(SHAPES)]]


def draw_example(split: str, index: int, seed: int = 0) -> tuple[np.ndarray, dict]:
    """Draws example `index` of `split`.

    Returns:
      image: uint8 (32, 32, 3); record: {"caption": str, "label": first object's class,
      "objects": int32 (2,) class ids (-1: none), "relation": int (-1 none, 0 left of, 1 above),
      "centers": float32 (2, 2) (x, y) centres (-1 for none)}.
    """
    check_choice("split", split, SPLIT_CODES)
    rng = np.random.default_rng([int(seed), SPLIT_CODES[split], int(index)])
    image = np.zeros((SIZE, SIZE, 3), np.uint8)
    centers = np.full((2, 2), -1.0, np.float32)
    if split == "train" and rng.random() < ONE_OBJECT_FRACTION:
        cls = int(rng.integers(NUM_CLASSES))
        r = rng.uniform(5.0, 9.0)
        cx, cy = rng.uniform(r + 1.5, SIZE - r - 1.5, size=2)
        _paint(image, cls, cx, cy, r)
        centers[0] = cx, cy
        return image, {"caption": caption(cls), "label": cls,
                       "objects": np.array([cls, -1], np.int32), "relation": -1,
                       "centers": centers}
    pairs = TRAIN_PAIRS if split == "train" else HELD_OUT
    first, second, relation = pairs[int(rng.integers(len(pairs)))]
    for k, cls in enumerate((first, second)):
        r = rng.uniform(3.8, 5.5)
        # along the relation's axis: first object in the first half, second in the other;
        # across it: anywhere, but within 4 px of the other so the relation is unambiguous
        along = rng.uniform(r + 1.0, SIZE / 2 - r - 0.5) + (SIZE / 2 if k else 0.0)
        if k == 0:
            across = rng.uniform(r + 2.0, SIZE - r - 2.0)
        else:
            across = np.clip(centers[0][1 - relation] + rng.uniform(-4, 4), r + 1.0,
                             SIZE - r - 1.0)
        cx, cy = (along, across) if relation == 0 else (across, along)
        _paint(image, cls, cx, cy, r)
        centers[k] = cx, cy
    return image, {"caption": caption(first, second, relation), "label": first,
                   "objects": np.array([first, second], np.int32), "relation": relation,
                   "centers": centers}


def shapes_arrays(split: str, num: int | None = None, seed: int = 0, start: int = 0
                  ) -> tuple[np.ndarray, list[dict]]:
    """Examples start..start+num of a split: (images uint8 (num, 32, 32, 3), records)."""
    check_choice("split", split, SPLIT_CODES)
    num = SPLIT_SIZES[split] if num is None else num
    check_int(num, "num", 1)
    if not isinstance(seed, int) or seed < 0:
        raise InputError(f"seed must be an integer >= 0; got {seed!r}")
    drawn = [draw_example(split, i, seed) for i in range(start, start + num)]
    return np.stack([d[0] for d in drawn]), [d[1] for d in drawn]
