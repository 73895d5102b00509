"""How well a text-to-image shapes run follows its prompts, judged from pixels only.

Usage:
  python -m benchmarks.quality_shapes --check [--num 2000]        # the judge on drawn images
  python -m benchmarks.quality_shapes --workdir runs/shapes_t2i --num 500 [--steps 25]

--check judges freshly drawn dataset images (a seed the dataset does not use) against their
captions: the judge itself must agree >= 99%. With --workdir it generates `num` images of the 15
one-object prompts (cycled) and `num` of the held-out two-object prompts (the "test" split's
combinations, never seen in training), at guidance 1, 3 and 5, through the same generation as
`jaxdiff txt2img`, and reports color, shape and count accuracy on the one-object prompts and
color, shape and relation accuracy on the two-object ones (judge: benchmarks/shapes_judge.py).
Targets: >= 0.90 color and shape on one-object prompts, >= 0.70 relation on two-object prompts.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from benchmarks.shapes_judge import score
from jaxdiff.data import shapes

GUIDANCE = (1.0, 3.0, 5.0)


def check_judge(num: int, seed: int = 12345) -> dict:
    """Judge agreement with the captions of freshly drawn images of both splits."""
    out = {}
    for split in ("train", "test"):
        images, records = shapes.shapes_arrays(split, num, seed=seed)
        out[split] = score(images, [r["caption"] for r in records])
    return out


def evaluate_run(workdir: str, num: int, steps: int, method: str | None, seed: int,
                 guidance=GUIDANCE) -> dict:
    from jaxdiff.pipelines.run_loading import load_run_text_to_image
    from jaxdiff.pipelines.text_to_image import generate

    model = load_run_text_to_image(workdir)
    one = [shapes.ONE_OBJECT_CAPTIONS[i % 15] for i in range(num)]
    two = [shapes.HELD_OUT_CAPTIONS[i % len(shapes.HELD_OUT_CAPTIONS)] for i in range(num)]
    results = {}
    for g in guidance:
        started = time.perf_counter()
        row = {}
        for name, prompts in (("one_object", one), ("two_object_held_out", two)):
            images = generate(model, prompts, num_steps=steps, method=method,
                              guidance_scale=g, key=seed, batch_size=min(num, 64))
            row[name] = score(images, prompts)
        row["seconds"] = round(time.perf_counter() - started, 1)
        results[f"guidance_{g:g}"] = row
        print(json.dumps({f"guidance_{g:g}": row}), file=sys.stderr)
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--check", action="store_true", help="judge drawn dataset images")
    parser.add_argument("--num", type=int, default=500)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--method", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="also write the results as JSON")
    args = parser.parse_args(argv)
    if args.check == (args.workdir is not None):
        parser.error("give exactly one of --check and --workdir")
    results = check_judge(args.num) if args.check else evaluate_run(
        args.workdir, args.num, args.steps, args.method, args.seed)
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as handle:
            handle.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
