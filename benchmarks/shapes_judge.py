"""A judge of shapes images that sees pixels only: objects, their colors, shapes and relation.

Foreground pixels (brightest channel >= 96 of 255) are split into 8-connected components; the
judge keeps components of at least 6 pixels, largest first. A component's color is the nearest
of the five named hues to the hue of its mean color (white when that color's saturation is below
0.35); its shape comes from a rotation-invariant measure, the fill ratio area / (pi d^2), with d
the largest distance from the centroid to a pixel's far corner (a disk fills ~0.9 of its
circumscribed disk, 0.70-0.9 when drawn on pixels, a square 2/pi = 0.64, a triangle ~0.4); the relation of two objects compares their
centroids ("left of": the first is further left than it is above or below the second).
"""

from __future__ import annotations

import colorsys
import dataclasses
import re

import numpy as np

from jaxdiff.data import shapes

FOREGROUND = 96
MIN_PIXELS = 6
WHITE_SATURATION = 0.35
HUES = {"red": 0.0, "yellow": 60.0, "green": 120.0, "blue": 240.0}
# Fill-ratio thresholds between triangle | square | circle (calibrated on drawn shapes).
SHAPE_EDGES = (0.57, 0.665)
_CAPTION = re.compile(r"^a (\w+) (\w+)(?: (left of|above) a (\w+) (\w+))?$")


@dataclasses.dataclass(frozen=True)
class Found:
    color: str
    shape: str
    centroid: tuple[float, float]  # (x, y) in pixels
    area: int
    fill: float


def to_uint8(image) -> np.ndarray:
    """uint8 (H, W, 3) from uint8 or float [-1, 1] pixels."""
    image = np.asarray(image)
    if image.dtype == np.uint8:
        return image
    return np.clip(np.round((image + 1.0) * 127.5), 0, 255).astype(np.uint8)


def color_of(rgb: np.ndarray) -> str:
    r, g, b = (float(v) / 255.0 for v in rgb)
    hue, saturation, _ = colorsys.rgb_to_hsv(r, g, b)
    if saturation < WHITE_SATURATION:
        return "white"
    hue *= 360.0
    return min(HUES, key=lambda name: min(abs(hue - HUES[name]), 360 - abs(hue - HUES[name])))


def shape_of(fill: float) -> str:
    return "triangle" if fill < SHAPE_EDGES[0] else "square" if fill < SHAPE_EDGES[1] else "circle"


def find_objects(image) -> list[Found]:
    """The objects of one image (H, W, 3), largest first."""
    from scipy import ndimage

    pixels = to_uint8(image).astype(np.float32)
    mask = pixels.max(axis=-1) >= FOREGROUND
    labelled, count = ndimage.label(mask, structure=np.ones((3, 3)))
    found = []
    for k in range(1, count + 1):
        ys, xs = np.nonzero(labelled == k)
        if len(xs) < MIN_PIXELS:
            continue
        cx, cy = xs.mean() + 0.5, ys.mean() + 0.5
        # farthest pixel corner from the centroid: the radius of the circumscribed disk
        corners_x = xs[:, None] + np.array([0.0, 1.0, 0.0, 1.0])
        corners_y = ys[:, None] + np.array([0.0, 0.0, 1.0, 1.0])
        d = np.sqrt((corners_x - cx) ** 2 + (corners_y - cy) ** 2).max()
        fill = len(xs) / (np.pi * d * d)
        found.append(Found(color_of(pixels[ys, xs].mean(axis=0)), shape_of(fill), (cx, cy),
                           len(xs), float(fill)))
    return sorted(found, key=lambda f: -f.area)


def parse_caption(caption: str) -> tuple[list[tuple[str, str]], str | None]:
    """"a red circle left of a blue square" -> ([("red", "circle"), ("blue", "square")],
    "left of")."""
    m = _CAPTION.match(caption.strip())
    if not m or m.group(1) not in shapes.COLORS or m.group(2) not in shapes.SHAPES:
        raise ValueError(f"not a shapes caption: {caption!r}")
    objects = [(m.group(1), m.group(2))]
    if m.group(3):
        objects.append((m.group(4), m.group(5)))
    return objects, m.group(3)


def relation_holds(first: Found, second: Found, relation: str) -> bool:
    dx = second.centroid[0] - first.centroid[0]
    dy = second.centroid[1] - first.centroid[1]
    if relation == "left of":
        return dx > 0 and abs(dx) > abs(dy)
    return dy > 0 and abs(dy) > abs(dx)


def judge(image, caption: str) -> dict[str, bool]:
    """Scores one image against its caption.

    One object: "color" and "shape" of the largest object, "count" (exactly one object).
    Two objects: the two largest objects are matched to the named ones (the assignment that gets
    more colors and shapes right); "color" and "shape" are right when both objects' are,
    "relation" when their centroids stand in the named relation, "count" when there are two.
    "all": everything right.
    """
    wanted, relation = parse_caption(caption)
    found = find_objects(image)
    result = {"count": len(found) == len(wanted)}
    if not found:
        result.update(color=False, shape=False)
        if relation:
            result["relation"] = False
        result["all"] = False
        return result
    if relation is None:
        result["color"] = found[0].color == wanted[0][0]
        result["shape"] = found[0].shape == wanted[0][1]
    else:
        if len(found) < 2:
            result.update(color=False, shape=False, relation=False, all=False)
            return result
        a, b = found[:2]

        def hits(x, y):
            return sum((x.color == wanted[0][0], x.shape == wanted[0][1],
                        y.color == wanted[1][0], y.shape == wanted[1][1]))

        first, second = (a, b) if hits(a, b) >= hits(b, a) else (b, a)
        result["color"] = first.color == wanted[0][0] and second.color == wanted[1][0]
        result["shape"] = first.shape == wanted[0][1] and second.shape == wanted[1][1]
        result["relation"] = relation_holds(first, second, relation)
    result["all"] = all(result.values())
    return result


def score(images, captions) -> dict[str, float]:
    """Fractions right over a batch: color, shape, count, all, and relation (two-object
    captions only; NaN when there are none)."""
    results = [judge(im, c) for im, c in zip(images, captions)]
    out = {k: float(np.mean([r[k] for r in results])) for k in ("color", "shape", "count", "all")}
    rel = [r["relation"] for r in results if "relation" in r]
    out["relation"] = float(np.mean(rel)) if rel else float("nan")
    out["num"] = len(results)
    return out
