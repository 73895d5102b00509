"""Data-parallel scaling of the train step, and the cifar10 preset on an accelerator.

Run from the repository root:

    python -m benchmarks.scaling [--devices 1,2,4] [--batch-size 64] [--steps 5]
    python -m benchmarks.scaling --accelerator     # on a GPU/TPU machine: cifar10 at batch 128

CPU part: for each N, a subprocess with `XLA_FLAGS=--xla_force_host_platform_device_count=N`
builds the digits train step on a `mesh.data=N` mesh with jaxdiff's own building blocks
(`parallel.make_mesh`, `training.init_sharded_train_state`, `parallel.batch_sharding`,
`parallel.global_batch`, `training.jit_train_step` with the state and batch shardings) and
times it. The simulated devices share the same physical cores, so this measures the overhead of
the partitioned program (collectives, smaller per-device convolutions), not a speed-up.

Accelerator part (skipped on CPU): the `cifar10` preset (the DDPM paper's 35.7M-parameter UNet,
`jaxdiff.configs.get_config("cifar10")`) at batch 128 in float32 and in bfloat16
(`config.model.dtype`): images/s, MFU against a measured matmul peak of the same dtype, the
device's peak memory (`memory_stats()["peak_bytes_in_use"]`), and DDIM-50 sampling images/s;
each dtype in its own subprocess so that peak memory is its own.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from benchmarks.common import markdown_table

REPO = Path(__file__).resolve().parents[1]


def _worker_cpu(n: int, batch_size: int, steps: int, overrides: dict) -> dict:
    import jax
    import numpy as np

    from benchmarks.common import interleaved_times, median, timed
    from benchmarks.train_step import config_for_shape
    from jaxdiff import parallel, training

    assert jax.device_count() == n, (jax.device_count(), n)
    config = config_for_shape("16x16x1", batch_size, **overrides)
    config.mesh.data, config.mesh.fsdp = n, 1
    mesh = parallel.make_mesh(config.mesh)
    graphdef, optimizer, state, shardings = training.init_sharded_train_state(config, mesh)
    bsh = parallel.batch_sharding(mesh)
    step = training.jit_train_step(training.make_train_step(
        graphdef, training.schedule_from_config(config), optimizer, config), shardings, bsh)
    m = config.model
    images = np.random.default_rng(0).uniform(
        -1, 1, (batch_size, m.image_size, m.image_size, m.in_channels)).astype(np.float32)
    batch = parallel.global_batch({"image": images}, bsh)
    compile_s, compiled = timed(lambda: step.lower(state, batch).compile())
    holder = {"state": state}

    def run():
        holder["state"], metrics = compiled(holder["state"], batch)
        jax.block_until_ready(metrics["loss"])

    t = median(interleaved_times({"step": run}, repeats=steps, warmup=2)["step"])
    return {"devices": n, "batch": batch_size, "step_ms": 1e3 * t,
            "images_per_s": batch_size / t, "compile_s": compile_s}


def _worker_accelerator(dtype: str, batch_size: int, steps: int) -> dict:
    import jax
    import jax.numpy as jnp

    from benchmarks.common import interleaved_times, median
    from benchmarks.mfu import matmul_peak
    from benchmarks.sampling_speed import make_scan_runner
    from benchmarks.train_step import make_jax_train_step, step_flops
    from jaxdiff import training
    from jaxdiff.configs import get_config
    from jaxdiff.models import init_model, make_model_fn

    config = get_config("cifar10")
    config.train.batch_size = batch_size
    config.model.dtype = dtype
    step, info = make_jax_train_step(config)
    t = median(interleaved_times({"step": step}, repeats=steps, warmup=2)["step"])
    flops = step_flops(info["compiled"])
    peak = matmul_peak(8192, jnp.bfloat16 if dtype == "bfloat16" else jnp.float32)
    stats = jax.local_devices()[0].memory_stats() or {}
    m = config.model
    graphdef, params = init_model(dict(m), jax.random.key(0))
    x_T = jax.random.normal(jax.random.key(1), (batch_size, m.image_size, m.image_size,
                                                 m.in_channels))
    run, _ = make_scan_runner(make_model_fn(graphdef, params),
                              training.schedule_from_config(config), "ddim", 50, x_T,
                              jax.random.key(2))
    run()
    ts = median(interleaved_times({"s": run}, repeats=3, warmup=0)["s"])
    return {"dtype": dtype, "batch": batch_size, "device": jax.devices()[0].device_kind,
            "params": info["params"], "step_ms": 1e3 * t, "images_per_s": batch_size / t,
            "mfu": flops / t / peak, "peak_flops": peak,
            "peak_memory_gib": stats.get("peak_bytes_in_use", float("nan")) / 2**30,
            "ddim50_images_per_s": batch_size / ts}


def _subprocess(args: list[str], env_extra: dict) -> dict:
    env = dict(os.environ, **env_extra)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    r = subprocess.run([sys.executable, "-m", "benchmarks.scaling", *args], cwd=str(REPO),
                       env=env, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"scaling worker {args} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def cpu_scaling(devices=(1, 2, 4), batch_size: int = 64, steps: int = 5,
                overrides: dict | None = None) -> list[dict]:
    rows = []
    for n in devices:
        flags = " ".join(f for f in os.environ.get("XLA_FLAGS", "").split()
                         if "device_count" not in f)
        rows.append(_subprocess(
            ["--worker-cpu", str(n), "--batch-size", str(batch_size), "--steps", str(steps),
             "--overrides", json.dumps(overrides or {})],
            {"XLA_FLAGS": f"{flags} --xla_force_host_platform_device_count={n}".strip(),
             "JAX_PLATFORMS": "cpu"}))
    base = rows[0]["step_ms"]
    for r in rows:
        r["relative"] = r["step_ms"] / base
    return rows


def accelerator_cifar10(batch_size: int = 128, steps: int = 20,
                        dtypes=("float32", "bfloat16")) -> list[dict] | None:
    """The cifar10 preset on the default accelerator; None when JAX's backend is the CPU or the
    preset does not exist."""
    import jax

    if jax.default_backend() == "cpu":
        return None
    from jaxdiff.configs import PRESETS

    if "cifar10" not in PRESETS:
        return None
    return [_subprocess(["--worker-accelerator", d, "--batch-size", str(batch_size),
                         "--steps", str(steps)], {}) for d in dtypes]


def cpu_table(rows: list[dict]) -> str:
    return markdown_table(
        ["simulated CPU devices (mesh data=N)", "global batch", "step (ms)", "images/s",
         "relative to 1", "compile (s)"],
        [[r["devices"], r["batch"], r["step_ms"], r["images_per_s"], f"{r['relative']:.2f}x",
          r["compile_s"]] for r in rows])


def accelerator_table(rows: list[dict]) -> str:
    return markdown_table(
        ["device", "dtype", "batch", "params", "step (ms)", "images/s", "MFU",
         "peak memory (GiB)", "DDIM-50 images/s"],
        [[r["device"], r["dtype"], r["batch"], f"{r['params']:,}", r["step_ms"],
          r["images_per_s"], f"{100 * r['mfu']:.0f}%", r["peak_memory_gib"],
          r["ddim50_images_per_s"]] for r in rows])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--devices", default="1,2,4")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--accelerator", action="store_true")
    p.add_argument("--overrides", default="{}", help=argparse.SUPPRESS)
    p.add_argument("--worker-cpu", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--worker-accelerator", default=None, help=argparse.SUPPRESS)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if args.worker_cpu is not None:
        print(json.dumps(_worker_cpu(args.worker_cpu, args.batch_size or 64, args.steps or 5,
                                     json.loads(args.overrides))))
        return 0
    if args.worker_accelerator is not None:
        print(json.dumps(_worker_accelerator(args.worker_accelerator, args.batch_size or 128,
                                             args.steps or 20)))
        return 0
    if args.accelerator:
        rows = accelerator_cifar10(args.batch_size or 128, args.steps or 20)
        if rows is None:
            print("no accelerator (or no cifar10 preset): nothing measured")
            return 0
        print(json.dumps(rows) if args.json else accelerator_table(rows))
        return 0
    rows = cpu_scaling(tuple(int(d) for d in args.devices.split(",")), args.batch_size or 64,
                       args.steps or 5)
    print(json.dumps(rows) if args.json else cpu_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
