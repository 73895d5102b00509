"""Few-step digits: the distilled student (jaxdiff distill) against its teacher's DDIM.

Writes a PNG whose rows are the teacher with DDIM 1, 2, 4, 50 steps, then the student with 1, 2,
4 steps, all from the same noise (one column per x_T), and prints one `jaxdiff eval` command per
table row of benchmarks/RESULTS.md.

  jaxdiff train --workdir runs/digits
  jaxdiff distill --workdir runs/digits --out runs/digits_student --steps 4
  python benchmarks/distill_digits.py --teacher runs/digits --student runs/digits_student \
      --out docs/images/distill.png
"""

from __future__ import annotations

import argparse

import numpy as np

from jaxdiff.distill import pair_noise
from jaxdiff.generate import generate_images, load_run
from jaxdiff.viz import image_grid, save_png

TEACHER_STEPS = (1, 2, 4, 50)
STUDENT_STEPS = (1, 2, 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", required=True)
    parser.add_argument("--student", required=True)
    parser.add_argument("--out", default="distill.png")
    parser.add_argument("--columns", type=int, default=12)
    parser.add_argument("--seed", type=int, default=1234, help="not the pairs' seed (0)")
    args = parser.parse_args()
    teacher, t_graphdef, t_params, _ = load_run(args.teacher)
    student, s_graphdef, s_params, _ = load_run(args.student)
    x_T = pair_noise(teacher, args.columns, args.seed)
    rows, captions = [], []
    for steps in TEACHER_STEPS:
        rows.append(generate_images(teacher, t_graphdef, t_params, num=args.columns, latents=x_T,
                                    method="ddim", num_steps=steps, spacing="trailing",
                                    eta=0.0))
        captions += [f"T{steps}"] * args.columns
    for steps in STUDENT_STEPS:
        rows.append(generate_images(student, s_graphdef, s_params, num=args.columns,
                                    latents=x_T, num_steps=steps))
        captions += [f"S{steps}"] * args.columns
    save_png(image_grid(np.clip(np.concatenate(rows), -1, 1), nrow=args.columns, upscale=2,
                        labels=captions), args.out)
    print(f"wrote {args.out} (rows: teacher DDIM {TEACHER_STEPS}, student {STUDENT_STEPS})")
    for steps in TEACHER_STEPS:
        print(f"jaxdiff eval --workdir {args.teacher} --num 500 --method ddim --steps {steps}")
    for steps in STUDENT_STEPS:
        print(f"jaxdiff eval --workdir {args.student} --num 500 --steps {steps}")


if __name__ == "__main__":
    main()
