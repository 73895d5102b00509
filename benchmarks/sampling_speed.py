"""Sampling speed: jaxdiff's one-scan sampler, a Python loop over a jitted step, and diffusers.

Run from the repository root (torch/diffusers only for the diffusers column):

    python -m benchmarks.sampling_speed [--batch-size 64] [--ddpm-steps 1000] [--repeats 2]

For DDIM (eta 0) 50 steps and DDPM 1000 steps with the default digits architecture (random
weights: speed does not depend on them) at batch 64, each of three runners samples a batch:

- scan: `jaxdiff.sampling.sample` (the whole loop is one `lax.scan` in one compiled call);
- loop: a Python `for` over a jitted single step that applies the same update
  (`SAMPLERS[method].step` with the same denoiser), one dispatch per step;
- diffusers: the DDIMPipeline/DDPMPipeline scheduler loop around `UNet2DModel` (same
  architecture and parameter count) under `torch.inference_mode()`.

All are compiled / warmed up first, then called alternately; medians of the repeats.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import interleaved_times, markdown_table, median, timed, torch_available
from jaxdiff import training
from jaxdiff.configs import get_config
from jaxdiff.models import init_model, make_model_fn
from jaxdiff.sampling import sample, timesteps
from jaxdiff.sampling.base import Context, StepInput, make_denoise
from jaxdiff.sampling.loop import SAMPLERS


def jitted_sampler(schedule, method: str, num_steps: int):
    """`jax.jit(f)` with f(model_fn, x_T, key) = `sample(...)` (spacing "leading"; the key is
    used by DDPM only). The outer jit allows ahead-of-time compilation
    (`.lower(...).compile()`), which `sample`'s own cache does not expose."""

    def f(model_fn, x_T, key):
        return sample(model_fn, schedule, x_T, method=method, num_steps=num_steps,
                      spacing="leading", key=key if method == "ddpm" else None)

    return jax.jit(f)


def make_scan_runner(model_fn, schedule, method: str, num_steps: int, x_T, key
                     ) -> tuple[Callable[[], object], float]:
    """(run, compile seconds) for the one-scan sampler."""
    compile_s, compiled = timed(
        lambda: jitted_sampler(schedule, method, num_steps).lower(model_fn, x_T, key)
        .compile())
    return (lambda: jax.block_until_ready(compiled(model_fn, x_T, key))), compile_s


def make_loop_runner(model_fn, schedule, method: str, num_steps: int, x_T, key
                     ) -> Callable[[], object]:
    """A Python loop over one jitted sampler step (the same update rule and denoiser as the
    scan: `SAMPLERS[method].step`), with the timesteps held on the device beforehand."""
    sampler = SAMPLERS[method]
    ts = np.asarray(timesteps(schedule, num_steps, "leading"))
    t_next = np.concatenate([ts[1:], [-1]]).astype(np.int32)
    inputs = [tuple(jax.device_put(np.int32(v)) for v in (k, ts[k], t_next[k]))
              for k in range(num_steps)]

    @jax.jit
    def step(model_fn, schedule, x, k, t, t_nxt, key):
        ctx = Context(schedule=schedule, denoise=make_denoise(model_fn, "epsilon"),
                      num_steps=num_steps, eta=jnp.zeros((), jnp.float32),
                      variance_type="fixed_small", leading=jnp.asarray(True))
        z = (jax.random.normal(jax.random.fold_in(key, k), x.shape, x.dtype)
             if method == "ddpm" else jnp.zeros_like(x))
        x, _, _ = sampler.step(ctx, x, StepInput(k=k, t=t, t_prev=t, t_next=t_nxt, noise=z))
        return x

    def run():
        x = x_T
        for k, t, t_nxt in inputs:
            x = step(model_fn, schedule, x, k, t, t_nxt, key)
        return jax.block_until_ready(x)

    jax.block_until_ready(step(model_fn, schedule, x_T, *inputs[0], key))  # compile
    return run


def compare(methods_steps=(("ddim", 50), ("ddpm", 1000)), batch_size: int = 64,
            repeats: int = 2, config=None, with_torch: bool | None = None) -> list[dict]:
    """Seconds per sampled batch for scan, loop (and diffusers), called alternately."""
    config = config or get_config("digits")
    if with_torch is None:
        with_torch = torch_available()
    m = config.model
    graphdef, params = init_model(dict(m), jax.random.key(0))
    model_fn = make_model_fn(graphdef, params)
    schedule = training.schedule_from_config(config)
    x_T = jax.random.normal(jax.random.key(1), (batch_size, m.image_size, m.image_size,
                                                 m.in_channels))
    key = jax.random.key(2)
    if with_torch:
        from benchmarks import torch_reference as tr

        tr.set_threads(_cores())
    rows = []
    for method, n in methods_steps:
        scan, compile_s = make_scan_runner(model_fn, schedule, method, n, x_T, key)
        runners = {"scan": scan, "loop": make_loop_runner(model_fn, schedule, method, n, x_T, key)}
        if with_torch:
            runners["diffusers"] = tr.make_sampler(config, method, n, batch_size)
        # Long runs (DDPM 1000) need no warm-up call: everything is compiled already, and the
        # first diffusers step warms torch up within a run of 1000.
        times = interleaved_times(runners, repeats=repeats, warmup=1 if n <= 100 else 0)
        row = {"method": method, "steps": n, "batch": batch_size, "scan_compile_s": compile_s}
        for name, ts in times.items():
            row[f"{name}_s"] = median(ts)
            row[f"{name}_all_s"] = [round(x, 2) for x in ts]
        row["scan_over_loop"] = row["scan_s"] / row["loop_s"]
        if with_torch:
            row["scan_over_diffusers"] = row["scan_s"] / row["diffusers_s"]
        rows.append(row)
    return rows


def _cores() -> int:
    import os

    return os.cpu_count() or 1


def table(rows: list[dict]) -> str:
    torch_cols = "diffusers_s" in rows[0]
    headers = ["sampler", "batch", "jaxdiff scan (s)", "jaxdiff loop (s)"]
    headers += ["diffusers (s)", "scan / diffusers"] if torch_cols else []
    headers += ["scan / loop", "scan images/s"]
    out = []
    for r in rows:
        line = [f"{r['method'].upper()} {r['steps']}", r["batch"], r["scan_s"], r["loop_s"]]
        if torch_cols:
            line += [r["diffusers_s"], f"{r['scan_over_diffusers']:.2f}x"]
        line += [f"{r['scan_over_loop']:.2f}x", r["batch"] / r["scan_s"]]
        out.append(line)
    return markdown_table(headers, out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--ddim-steps", type=int, default=50)
    p.add_argument("--ddpm-steps", type=int, default=1000)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    rows = compare((("ddim", args.ddim_steps), ("ddpm", args.ddpm_steps)), args.batch_size,
                   args.repeats, with_torch=False if args.no_torch else None)
    print(json.dumps(rows) if args.json else table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
