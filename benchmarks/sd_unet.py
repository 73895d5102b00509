"""The SD 1.5-sized UNet: forward time, peak memory and loading from disk, jaxdiff vs diffusers.

Run from the repository root (torch/diffusers needed):

    python -m benchmarks.sd_unet [--batches 1,2] [--calls 2] [--keep DIR]

A random-weight UNet2DConditionModel with the SD 1.5 config (tests/fixtures/sd15/unet, about
3.4 GB of float32 weights) is written once with diffusers' save_pretrained (safetensors). Then
each (library, batch) runs in its own fresh process, so that the peak resident memory
(`resource.getrusage(RUSAGE_SELF).ru_maxrss`) is that measurement's alone: the process loads the
folder (jaxdiff: `jaxdiff.pretrained.load_component` + placing the params on the device;
diffusers: `UNet2DConditionModel.from_pretrained`), then calls the UNet `--calls` times on
64x64x4 latents, a timestep and (batch, 77, 768) text states, in float32 on the CPU. The first
jaxdiff call includes compiling; "steady" is the median of the later calls. Results go to
benchmarks/RESULTS.md (block `sd_unet`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "sd15" / "unet"


def write_unet(folder: Path) -> Path:
    """The SD 1.5 UNet with random weights, saved as diffusers saves it."""
    import diffusers
    import torch

    config = {k: v for k, v in json.loads((FIXTURE / "config.json").read_text()).items()
              if not k.startswith("_")}
    torch.manual_seed(0)
    diffusers.UNet2DConditionModel.from_config(config).save_pretrained(
        folder, safe_serialization=True)
    return folder


def _inputs(batch: int):
    import numpy as np

    rng = np.random.default_rng(batch)
    x = rng.standard_normal((batch, 64, 64, 4)).astype(np.float32)
    context = rng.standard_normal((batch, 77, 768)).astype(np.float32)
    return x, np.full((batch,), 500, np.int32), context


def measure_jaxdiff(folder: Path, batch: int, calls: int) -> dict:
    from jaxdiff import xla_defaults

    xla_defaults.apply()
    import jax

    from jaxdiff.models.unet_condition import apply_unet_condition
    from jaxdiff.pretrained import load_component
    from jaxdiff.pretrained.convert import flatten_params, unflatten_params

    t0 = time.perf_counter()
    loaded = load_component(folder, kind="UNet2DConditionModel")
    graphdef, host = loaded.graphdef, flatten_params(loaded.params)
    del loaded
    # Leaf by leaf, each host copy dropped once placed: jax.device_put always copies on the CPU,
    # so placing the whole tree at once would hold the weights twice.
    params = unflatten_params({path: jax.device_put(host.pop(path)) for path in list(host)})
    jax.block_until_ready(params)
    load_s = time.perf_counter() - t0
    x, t, context = (jax.device_put(a) for a in _inputs(batch))
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        jax.block_until_ready(apply_unet_condition(graphdef, params, x, t, context))
        times.append(time.perf_counter() - t0)
    return {"load_s": load_s, "times": times}


def measure_diffusers(folder: Path, batch: int, calls: int) -> dict:
    import diffusers
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    t0 = time.perf_counter()
    model = diffusers.UNet2DConditionModel.from_pretrained(folder).eval()
    load_s = time.perf_counter() - t0
    x, t, context = _inputs(batch)
    x = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
    t, context = torch.from_numpy(t), torch.from_numpy(context)
    times = []
    with torch.no_grad():
        for _ in range(calls):
            t0 = time.perf_counter()
            model(x, t, encoder_hidden_states=context)
            times.append(time.perf_counter() - t0)
    return {"load_s": load_s, "times": times}


def _child(library: str, folder: str, batch: int, calls: int) -> None:
    import resource

    result = (measure_jaxdiff if library == "jaxdiff" else measure_diffusers)(
        Path(folder), batch, calls)
    result["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
    print("RESULT " + json.dumps(result), flush=True)


def run_child(library: str, folder: Path, batch: int, calls: int) -> dict:
    """One measurement in a fresh Python process; its RESULT line as a dict."""
    cmd = [sys.executable, "-m", "benchmarks.sd_unet", "--child", library, str(folder),
           str(batch), str(calls)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False,
                          cwd=Path(__file__).resolve().parents[1],
                          env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise RuntimeError(f"{library} batch {batch} failed ({proc.returncode}):\n"
                           f"{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def main(argv=None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batches", default="1,2")
    p.add_argument("--calls", type=int, default=2, help="UNet calls per process (>= 2)")
    p.add_argument("--keep", default=None, help="folder to keep the random UNet in")
    p.add_argument("--out", default=str(Path(__file__).with_name("RESULTS.md")))
    args = p.parse_args(argv)
    from benchmarks.common import machine_info, machine_markdown, markdown_table, median

    start = time.perf_counter()
    folder = Path(args.keep or tempfile.mkdtemp(prefix="jaxdiff-bench-unet-")) / "unet"
    if not (folder / "config.json").exists():
        t0 = time.perf_counter()
        write_unet(folder)
        print(f"wrote {folder} in {time.perf_counter() - t0:.0f} s", flush=True)
    rows, ratios = [], []
    for batch in (int(b) for b in args.batches.split(",")):
        got = {}
        for library in ("diffusers", "jaxdiff"):
            got[library] = r = run_child(library, folder, batch, args.calls)
            print(f"{library} batch {batch}: {r}", flush=True)
            rows.append([library, batch, r["load_s"], r["times"][0], median(r["times"][1:]),
                         r["peak_rss_gib"]])
        j, d = got["jaxdiff"], got["diffusers"]
        ratios.append([batch, median(j["times"][1:]) / median(d["times"][1:]),
                       j["peak_rss_gib"] / d["peak_rss_gib"], j["load_s"] / d["load_s"]])
    table = markdown_table(["library", "batch", "load from disk (s)", "first call (s)",
                            "steady call (s)", "peak RSS (GiB)"], rows)
    ratio_table = markdown_table(["batch", "time jaxdiff / diffusers (target <= 1.0)",
                                  "peak memory jaxdiff / diffusers (target <= 1.2)",
                                  "load jaxdiff / diffusers (target <= 1.5)"], ratios)
    text = (f"### SD 1.5-sized UNet (`python -m benchmarks.sd_unet`, "
            f"{(time.perf_counter() - start) / 60:.1f} min)\n\n"
            f"{machine_markdown(machine_info())}\n"
            f"UNet2DConditionModel with the SD 1.5 config, random weights (3.4 GB float32) saved "
            f"as safetensors; 64x64x4 latents, 77x768 text states, float32, CPU. Each row is "
            f"its own process (peak RSS = ru_maxrss of that process, loading included); load = "
            f"reading the folder into the model (jaxdiff: load_component, then each "
            f"parameter placed on the device and its host copy dropped); "
            f"steady = median of calls 2..{args.calls}. One run on a shared, loaded machine: "
            f"the times carry the noise of the other work on it.\n\n{table}\n\n{ratio_table}\n")
    print(text)
    from benchmarks.run import write_results

    write_results(Path(args.out), "sd_unet", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
