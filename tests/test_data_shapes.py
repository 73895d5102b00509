"""The embedded captioned shapes: determinism, captions that match the pixels, held-out split,
the TFDS builder, captioned image folders; the pixel-only judge agrees with the captions."""

import json

import numpy as np
import pytest

from jaxdiff.data import shapes


def _parse(caption):
    words = caption.split()
    if len(words) == 3:
        return [(words[1], words[2])], None
    relation = "left of" if "left of" in caption else "above"
    first, second = caption.split(f" {relation} ")
    return [tuple(first.split()[1:]), tuple(second.split()[1:])], relation


def test_shapes_are_deterministic_and_seeded():
    a, ra = shapes.shapes_arrays("train", 20, seed=3)
    b, rb = shapes.shapes_arrays("train", 20, seed=3)
    c, _ = shapes.shapes_arrays("train", 20, seed=4)
    np.testing.assert_array_equal(a, b)
    assert [r["caption"] for r in ra] == [r["caption"] for r in rb]
    assert not np.array_equal(a, c)
    alone, record = shapes.draw_example("train", 7, seed=3)  # any example can be drawn alone
    np.testing.assert_array_equal(alone, a[7])
    assert record["caption"] == ra[7]["caption"]


@pytest.mark.parametrize("split", ["train", "test"])
def test_captions_match_the_drawn_pixels(split):
    images, records = shapes.shapes_arrays(split, 300, seed=11)
    for image, record in zip(images, records):
        named, relation = _parse(record["caption"])
        centers = record["centers"]
        for k, (color, _) in enumerate(named):
            cx, cy = centers[k]
            # the pixel under the object's centre has the named color
            np.testing.assert_array_equal(image[int(cy), int(cx)], shapes.COLORS[color])
        # nothing but the named objects is drawn: every lit pixel has one of their colors
        lit = image.max(axis=-1) > 0
        colors = {tuple(shapes.COLORS[c]) for c, _ in named}
        assert {tuple(p) for p in image[lit]} <= colors
        if relation == "left of":
            assert centers[0][0] < centers[1][0]
        elif relation == "above":
            assert centers[0][1] < centers[1][1]


def test_shape_of_each_object_matches_its_name():
    # Independent geometric check: the lit pixels of a one-object image fill the named shape's
    # bounding box as a disk (pi/4), a square (1) or a triangle (about 1/2) does.
    images, records = shapes.shapes_arrays("train", 400, seed=2)
    fills = {"circle": [], "square": [], "triangle": []}
    for image, record in zip(images, records):
        named, relation = _parse(record["caption"])
        if relation is not None:
            continue
        ys, xs = np.nonzero(image.max(axis=-1))
        box = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
        fills[named[0][1]].append(len(xs) / box)
    assert 0.7 < min(fills["circle"]) and max(fills["circle"]) < 0.86
    assert min(fills["square"]) == 1.0
    assert 0.4 < min(fills["triangle"]) and max(fills["triangle"]) < 0.62


def test_train_has_every_one_object_caption_and_no_held_out_pair():
    _, train = shapes.shapes_arrays("train", 3000, seed=0)
    _, test = shapes.shapes_arrays("test", 300, seed=0)
    captions = {r["caption"] for r in train}
    assert set(shapes.ONE_OBJECT_CAPTIONS) <= captions
    assert not captions & set(shapes.HELD_OUT_CAPTIONS)
    assert {r["caption"] for r in test} <= set(shapes.HELD_OUT_CAPTIONS)
    assert len(shapes.ONE_OBJECT_CAPTIONS) == 15 and len(shapes.HELD_OUT_CAPTIONS) == 42


def test_judge_agrees_with_captions_of_freshly_drawn_images():
    from benchmarks.shapes_judge import score

    for split in ("train", "test"):
        images, records = shapes.shapes_arrays(split, 400, seed=99)
        result = score(images, [r["caption"] for r in records])
        assert result["all"] >= 0.99, result
        # float images in [-1, 1] (what models produce) are judged the same
        again = score(images.astype(np.float32) / 127.5 - 1.0, [r["caption"] for r in records])
        assert again["all"] == result["all"]


def test_judge_rejects_wrong_captions():
    from benchmarks.shapes_judge import judge

    image, record = shapes.draw_example("test", 0)
    named, relation = _parse(record["caption"])
    (c1, s1), (c2, s2) = named
    swapped = f"a {c2} {s2} {relation} a {c1} {s1}"
    assert judge(image, record["caption"])["all"]
    assert not judge(image, swapped)["relation"]


def test_tfds_builder_writes_the_drawn_examples_with_captions(tmp_path, monkeypatch):
    from jaxdiff.configs import get_config
    from jaxdiff.data import input_pipeline
    from jaxdiff.data.captions import load_captions

    monkeypatch.setattr(shapes, "SPLIT_SIZES", {"train": 24, "test": 8})
    config = get_config("shapes_vae").data
    config.data_dir = str(tmp_path)
    assert load_captions(config, "test") == [shapes.draw_example("test", i)[1]["caption"]
                                             for i in range(8)]
    batch = next(input_pipeline(config, split="train", batch_size=8, seed=0, shuffle=False))
    expected = np.stack([shapes.draw_example("train", i)[0] for i in range(8)])
    np.testing.assert_allclose(batch["image"], expected / 127.5 - 1.0, atol=1e-6)
    np.testing.assert_array_equal(batch["index"], np.arange(8))


def test_folder_captions_from_metadata_jsonl(tmp_path):
    from PIL import Image

    from jaxdiff.data.captions import load_captions
    from jaxdiff.validation import InputError

    for i, text in enumerate(["a red circle", "a blue square"]):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / f"{i}.png")
    lines = [{"file_name": "1.png", "text": "a blue square"},
             {"file_name": "0.png", "text": "a red circle"}]
    (tmp_path / "metadata.jsonl").write_text("\n".join(json.dumps(x) for x in lines))
    config = {"name": f"folder:{tmp_path}", "image_size": 8, "channels": 3,
              "caption_key": "text"}
    assert load_captions(config, "train") == ["a red circle", "a blue square"]
    (tmp_path / "metadata.jsonl").write_text(json.dumps(lines[0]))
    with pytest.raises(InputError, match="0.png"):
        load_captions(config, "train")
