"""Compile time of the train step and of the sampler for 10, 100 and 1000 steps.

Run from the repository root:

    python -m benchmarks.compile_time [--steps 10,100,1000] [--method ddim]

Each is timed ahead of time, tracing (`jit(f).lower(...)`) and XLA compilation (`.compile()`)
separately, in wall seconds and in this process's CPU seconds (less sensitive to other load on a
shared machine; XLA's compiler is mostly single-threaded). Nothing is executed. The sampler is
`jaxdiff.sampling.sample` under an outer jit: its loop is one `lax.scan`, so the compiled program
does not grow with the number of steps and neither should the compile time.
"""

from __future__ import annotations

import argparse
import json
import time

import jax

from benchmarks.common import markdown_table
from benchmarks.sampling_speed import jitted_sampler
from benchmarks.train_step import config_for_shape
from jaxdiff import training
from jaxdiff.models import init_model, make_model_fn


def _aot(jitted, *args) -> dict:
    w0, c0 = time.perf_counter(), time.process_time()
    lowered = jitted.lower(*args)
    w1, c1 = time.perf_counter(), time.process_time()
    lowered.compile()
    w2, c2 = time.perf_counter(), time.process_time()
    return {"trace_s": w1 - w0, "compile_s": w2 - w1, "total_s": w2 - w0,
            "trace_cpu_s": c1 - c0, "total_cpu_s": c2 - c0}


def train_step_compile(config) -> dict:
    import numpy as np

    graphdef, optimizer, state = training.init_train_state(config, jax.random.key(0))
    step = training.jit_train_step(training.make_train_step(
        graphdef, training.schedule_from_config(config), optimizer, config))
    m = config.model
    batch = {"image": jax.numpy.asarray(np.zeros(
        (config.train.batch_size, m.image_size, m.image_size, m.in_channels), np.float32))}
    return {"what": f"train_step (batch {config.train.batch_size})", **_aot(step, state, batch)}


def sampler_compile(config, method: str = "ddim", steps=(10, 100, 1000),
                    batch_size: int = 64) -> list[dict]:
    m = config.model
    graphdef, params = init_model(dict(m), jax.random.key(0))
    model_fn = make_model_fn(graphdef, params)
    schedule = training.schedule_from_config(config)
    x_T = jax.ShapeDtypeStruct((batch_size, m.image_size, m.image_size, m.in_channels),
                               jax.numpy.float32)
    key = jax.random.key(0)
    rows = []
    for n in steps:
        rows.append({"what": f"sample {method} {n} steps (batch {batch_size})",
                     **_aot(jitted_sampler(schedule, method, n), model_fn, x_T, key)})
    return rows


def run(config=None, steps=(10, 100, 1000), method: str = "ddim") -> dict:
    """{"rows": [...], "sampler_ratio": compile time of the most / the fewest steps}."""
    config = config or config_for_shape("16x16x1", 64)
    rows = [train_step_compile(config)]
    samplers = sampler_compile(config, method, steps, config.train.batch_size)
    rows += samplers
    ratio = samplers[-1]["total_s"] / samplers[0]["total_s"]
    ratio_cpu = samplers[-1]["total_cpu_s"] / samplers[0]["total_cpu_s"]
    return {"rows": rows, "sampler_ratio": ratio, "sampler_ratio_cpu": ratio_cpu,
            "steps": list(steps)}


def table(result: dict) -> str:
    return markdown_table(
        ["what", "trace (s)", "XLA compile (s)", "total (s)", "total CPU (s)"],
        [[r["what"], r["trace_s"], r["compile_s"], r["total_s"], r["total_cpu_s"]]
         for r in result["rows"]])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", default="10,100,1000")
    p.add_argument("--method", default="ddim")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    result = run(steps=tuple(int(s) for s in args.steps.split(",")), method=args.method)
    if args.json:
        print(json.dumps(result))
    else:
        s = result["steps"]
        print(table(result))
        print(f"\nsampler compile, {s[-1]} vs {s[0]} steps: {result['sampler_ratio']:.2f}x wall, "
              f"{result['sampler_ratio_cpu']:.2f}x CPU")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
