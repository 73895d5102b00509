"""Model FLOPs utilisation of the training step (and of the sampler's forward pass).

Run from the repository root:

    python -m benchmarks.mfu [--batch-size 64] [--steps 10]

FLOPs per call come from XLA's cost analysis of the compiled program
(`jit(f).lower(...).compile().cost_analysis()["flops"]`); achieved FLOP/s = FLOPs / median
time per call; MFU = achieved / peak, where the peak is the measured throughput of a large
float32 `jnp` matmul (`--matmul-size`, 2 n^3 FLOPs) on the same device, in the same process.
"""

from __future__ import annotations

import argparse
import json

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import interleaved_times, markdown_table, median
from benchmarks.train_step import config_for_shape, make_jax_train_step, step_flops
from jaxdiff.models import apply_model, init_model


def matmul_peak(n: int = 2048, dtype=jnp.float32, repeats: int = 10) -> float:
    """FLOP/s of an n x n @ n x n matmul (median of `repeats` calls after a warm-up)."""
    a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n)), dtype)
    f = jax.jit(lambda x, y: x @ y)
    jax.block_until_ready(f(a, a))
    t = median(interleaved_times({"mm": lambda: jax.block_until_ready(f(a, a))},
                                 repeats=repeats, warmup=1)["mm"])
    return 2 * n ** 3 / t


def forward_runner(config, batch_size: int):
    """(run, flops) of one jitted inference forward pass of the UNet."""
    m = config.model
    graphdef, params = init_model(dict(m), jax.random.key(0))
    x = jnp.zeros((batch_size, m.image_size, m.image_size, m.in_channels), jnp.float32)
    t = jnp.full((batch_size,), 500, jnp.int32)
    compiled = jax.jit(lambda p, x, t: apply_model(graphdef, p, x, t)).lower(params, x, t).compile()
    return (lambda: jax.block_until_ready(compiled(params, x, t))), step_flops(compiled)


def run(config=None, steps: int = 10, matmul_size: int = 2048) -> dict:
    """Train-step and forward MFU, timed alternately with the matmul peak."""
    config = config or config_for_shape("16x16x1", 64)
    batch = config.train.batch_size
    train, info = make_jax_train_step(config)
    train_flops = step_flops(info["compiled"])
    fwd, fwd_flops = forward_runner(config, batch)
    a = jnp.asarray(np.random.default_rng(0).standard_normal((matmul_size,) * 2), jnp.float32)
    mm = jax.jit(lambda x, y: x @ y)
    times = interleaved_times({"train": train, "forward": fwd,
                               "matmul": lambda: jax.block_until_ready(mm(a, a))},
                              repeats=steps, warmup=2)
    peak = 2 * matmul_size ** 3 / median(times["matmul"])
    out = {"batch": batch, "peak_flops": peak, "matmul_size": matmul_size}
    for name, flops in (("train", train_flops), ("forward", fwd_flops)):
        t = median(times[name])
        out[name] = {"flops": flops, "ms": 1e3 * t, "achieved_flops": flops / t,
                     "mfu": flops / t / peak}
    return out


def table(r: dict) -> str:
    rows = [[f"{name} (batch {r['batch']})", r[name]["flops"] / 1e9, r[name]["ms"],
             r[name]["achieved_flops"] / 1e9, f"{100 * r[name]['mfu']:.0f}%"]
            for name in ("train", "forward")]
    rows.append([f"float32 matmul {r['matmul_size']}^3 (peak)", 2 * r["matmul_size"] ** 3 / 1e9,
                 2 * r["matmul_size"] ** 3 / r["peak_flops"] * 1e3, r["peak_flops"] / 1e9,
                 "100%"])
    return markdown_table(["jaxdiff", "GFLOP per call (XLA)", "ms (median)", "GFLOP/s", "MFU"],
                          rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--matmul-size", type=int, default=2048)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    r = run(config_for_shape("16x16x1", args.batch_size), args.steps, args.matmul_size)
    print(json.dumps(r) if args.json else table(r))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
