"""Training-step speed: jaxdiff's jitted `train_step` alone, and side by side with diffusers.

Run from the repository root (torch/diffusers only for --compare):

    python -m benchmarks.train_step                 # default digits model, batch 64
    python -m benchmarks.train_step --compare       # + diffusers UNet2DModel, 16x16x1 and 32x32x3

The jaxdiff step is the real one: `jaxdiff.training.make_train_step` + `jit_train_step` on the
state from `init_train_state` (noise, forward, MSE, backward, clip, AdamW, EMA). Compile time is
measured on its own (`lower(...).compile()`), step times after a warm-up call. In the comparison
the diffusers model is `UNet2DModel(**diffusers_equivalent_kwargs(**config.model))`, its step
does the same work (see `torch_reference`), torch runs on as many threads as the machine has
cores (XLA's CPU client uses one thread per core and has no flag to change that), and both
steps are called alternately in one process.
"""

from __future__ import annotations

import argparse
import json

import jax
import numpy as np

from benchmarks.common import interleaved_times, markdown_table, median, timed, torch_available
from jaxdiff import training
from jaxdiff.configs import get_config
from jaxdiff.models import count_params

# name -> (image_size, channels): the digits architecture at two image shapes; attention stays at
# the same levels (its resolutions scale with the image size: 8 at 16x16 becomes 16 at 32x32).
SHAPES = {"16x16x1": (16, 1), "32x32x3": (32, 3)}


def config_for_shape(shape: str = "16x16x1", batch_size: int = 64, **model_overrides):
    """The digits preset (with `model_overrides`, given for its 16x16 size) at the image shape
    `shape` (a key of SHAPES) and the batch size."""
    size, channels = SHAPES[shape]
    config = get_config("digits")
    for k, v in model_overrides.items():
        setattr(config.model, k, v)
    scale = size // config.data.image_size
    config.model.attention_resolutions = tuple(
        int(r) * scale for r in config.model.attention_resolutions)
    config.data.image_size = size
    config.data.channels = channels
    config.train.batch_size = batch_size
    return config


def make_jax_train_step(config, seed: int = 0):
    """Builds the jitted train step on a fixed random batch.

    Returns:
      step: `step()` runs one training step (state carried inside) and blocks on its result.
      info: {"params": parameter count, "compile_s": lower+compile seconds,
             "jitted": the jitted step, "args": (state, batch) abstract shapes for cost analysis}.
    """
    graphdef, optimizer, state = training.init_train_state(config, jax.random.key(seed))
    schedule = training.schedule_from_config(config)
    jitted = training.jit_train_step(training.make_train_step(graphdef, schedule, optimizer,
                                                              config))
    m = config.model
    rng = np.random.default_rng(seed)
    shape = (config.train.batch_size, m.image_size, m.image_size, m.in_channels)
    batch = {"image": jax.numpy.asarray(rng.uniform(-1, 1, shape).astype(np.float32))}
    abstract = jax.eval_shape(lambda s, b: (s, b), state, batch)
    compile_s, compiled = timed(lambda: jitted.lower(state, batch).compile())
    holder = {"state": state}

    def step():
        holder["state"], metrics = compiled(holder["state"], batch)
        jax.block_until_ready(metrics["loss"])

    return step, {"params": count_params(state.params), "compile_s": compile_s,
                  "jitted": jitted, "compiled": compiled, "args": abstract}


def digits_step(batch_size: int = 64, steps: int = 10, **model_overrides) -> dict:
    """Median step time of the default digits model (`get_config("digits")`) at `batch_size`."""
    config = config_for_shape("16x16x1", batch_size, **model_overrides)
    step, info = make_jax_train_step(config)
    times = interleaved_times({"jax": step}, repeats=steps, warmup=2)["jax"]
    ms = 1e3 * median(times)
    return {"model": "digits (default)", "batch": batch_size, "params": info["params"],
            "compile_s": info["compile_s"], "step_ms": ms, "images_per_s": batch_size / ms * 1e3}


def compare(shapes=tuple(SHAPES), batch_size: int = 64, steps: int = 10,
            with_torch: bool | None = None, **model_overrides) -> list[dict]:
    """jaxdiff vs diffusers training step for each shape, called alternately in this process.

    Without torch (or with_torch=False) only the jaxdiff columns are filled (torch ones None).
    Each row also holds the XLA cost-analysis FLOPs of the jaxdiff step ("flops").
    """
    if with_torch is None:
        with_torch = torch_available()
    if with_torch:
        from benchmarks import torch_reference as tr

        tr.set_threads(_cores())
    rows = []
    for shape in shapes:
        config = config_for_shape(shape, batch_size, **model_overrides)
        jstep, info = make_jax_train_step(config)
        runners = {"jax": jstep}
        torch_params = None
        if with_torch:
            runners["torch"], torch_params = tr.make_train_step(config, batch_size)
        times = interleaved_times(runners, repeats=steps, warmup=2)
        j = 1e3 * median(times["jax"])
        t = 1e3 * median(times["torch"]) if with_torch else None
        rows.append({"shape": shape, "batch": batch_size, "jax_params": info["params"],
                     "torch_params": torch_params,
                     "param_ratio": info["params"] / torch_params if with_torch else None,
                     "jax_ms": j, "torch_ms": t, "ratio": j / t if with_torch else None,
                     "jax_compile_s": info["compile_s"], "flops": step_flops(info["compiled"]),
                     "jax_ms_all": [round(1e3 * x, 1) for x in times["jax"]],
                     "torch_ms_all": [round(1e3 * x, 1) for x in times.get("torch", [])]})
    return rows


def step_flops(compiled) -> float:
    """FLOPs of one call of a compiled function, from XLA's cost analysis (nan if unavailable)."""
    try:
        cost = compiled.cost_analysis()
    except Exception:  # noqa: BLE001 - some backends do not implement it
        return float("nan")
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else {}
    return float((cost or {}).get("flops", float("nan")))


def _cores() -> int:
    import os

    return os.cpu_count() or 1


def digits_table(r: dict) -> str:
    return markdown_table(
        ["model", "batch", "params", "compile (s)", "step (ms, median)", "images/s"],
        [[r["model"], r["batch"], r["params"], r["compile_s"], r["step_ms"], r["images_per_s"]]])


def compare_table(rows: list[dict]) -> str:
    def cell(r, key, fmt="{:.3g}"):
        return "-" if r[key] is None else fmt.format(r[key])

    return markdown_table(
        ["shape", "batch", "params jaxdiff / diffusers", "jaxdiff (ms)", "diffusers (ms)",
         "jaxdiff / diffusers", "jaxdiff compile (s)"],
        [[r["shape"], r["batch"], f"{r['jax_params']:,} / " + cell(r, "torch_params", "{:,}"),
          r["jax_ms"], cell(r, "torch_ms", "{:.0f}"), cell(r, "ratio", "{:.2f}x"),
          r["jax_compile_s"]] for r in rows])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=10, help="timed steps (median)")
    p.add_argument("--compare", action="store_true", help="side by side with diffusers")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    r = digits_step(args.batch_size, args.steps)
    print(json.dumps(r) if args.json else digits_table(r))
    if args.compare:
        rows = compare(batch_size=args.batch_size, steps=args.steps)
        print(json.dumps(rows) if args.json else "\n" + compare_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
