"""`jaxdiff distill --workdir TEACHER --out STUDENT [--steps 4]`: a few-step student run
(jaxdiff.distill), then `jaxdiff sample --workdir STUDENT` samples it with its own steps.

Example:
  jaxdiff distill --workdir runs/digits --out runs/digits_4step --steps 4
  jaxdiff sample --workdir runs/digits_4step --steps 4
"""

from __future__ import annotations

import sys
import time


def add_arguments(parser) -> None:
    parser.add_argument("--workdir", required=True, help="the teacher run (unconditional pixel "
                        "run: digits, digits_flow, ...)")
    parser.add_argument("--out", required=True, help="the student's new run folder")
    parser.add_argument("--steps", type=int, default=4,
                        help="sampling steps the student is made for (it also works with fewer)")
    parser.add_argument("--pairs", type=int, default=8192,
                        help="teacher samples (noise, image) the student learns from")
    parser.add_argument("--teacher_steps", type=int, default=50,
                        help="steps of the teacher's deterministic sampler (DDIM or its flow "
                             "sampler)")
    parser.add_argument("--train_steps", type=int, default=1500, help="student train steps")
    parser.add_argument("--batch", type=int, default=None,
                        help="student batch size (default: the teacher's train.batch_size)")
    parser.add_argument("--seed", type=int, default=0)


def run(args) -> int:
    from jaxdiff.distill import distill

    start = time.perf_counter()
    out = distill(args.workdir, args.out, steps=args.steps, num_pairs=args.pairs,
                  teacher_steps=args.teacher_steps, train_steps=args.train_steps,
                  batch_size=args.batch, seed=args.seed, verbose=True)
    print(f"wrote the {args.steps}-step student run {out} in {time.perf_counter() - start:.0f} s;"
          f" sample it with `jaxdiff sample --workdir {out}`", file=sys.stderr)
    return 0
