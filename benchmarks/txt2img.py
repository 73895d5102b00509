"""Text-to-image speed: jaxdiff's one compiled generation against diffusers' StableDiffusionPipeline.

Run from the repository root (torch/diffusers needed for the diffusers column and to write the
random pipelines):

    python -m benchmarks.txt2img [--sizes tiny,sd15] [--steps 10] [--batches 1,2] [--repeats 2]

For each size a random-weight pipeline folder is written with diffusers (`tiny`: the test
fixture; `sd15`: the SD 1.5 UNet, VAE and text-encoder configs of tests/fixtures/sd15, about 4 GB
of float32 weights), loaded by both libraries, and both generate 256x256 images (latents
32x32x4; the tiny pipeline's own 32x32) with DPM-Solver++(2M), `--steps` steps, guidance 7.5
(two UNet passes per step), from the same initial latents, in float32 on the CPU. The two are
called alternately; medians. Reported: images/s, the ratio, jaxdiff's first-call time minus a
steady call (the compile time of the one jitted generation), and the largest difference between
the two libraries' images. Results go to benchmarks/RESULTS.md (block `txt2img`).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import (
    interleaved_times,
    machine_info,
    machine_markdown,
    markdown_table,
    median,
    timed,
)

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures"
PROMPT = "a watercolor painting of a lighthouse on a cliff at sunset"


def write_sd15_pipeline(out: Path) -> Path:
    """A random-weight pipeline folder with the SD 1.5 architecture (configs from the fixtures)."""
    import diffusers
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel

    from tests.fixtures.tiny_sd_pipeline import LEGACY_SCHEDULER_FILE, write_tokenizer

    def config(name):
        cfg = json.loads((FIXTURES / "sd15" / name / "config.json").read_text())
        return {k: v for k, v in cfg.items() if not k.startswith("_")}

    torch.manual_seed(0)
    unet = diffusers.UNet2DConditionModel.from_config(config("unet"))
    vae = diffusers.AutoencoderKL.from_config(config("vae"))
    text_encoder = CLIPTextModel(CLIPTextConfig.from_dict(config("text_encoder")))
    write_tokenizer(out)
    tokenizer = __import__("transformers").CLIPTokenizer.from_pretrained(out / "tokenizer")
    scheduler = diffusers.PNDMScheduler.from_config(LEGACY_SCHEDULER_FILE)
    pipe = diffusers.StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(out, safe_serialization=True)
    (out / "scheduler" / "scheduler_config.json").write_text(
        json.dumps(dict(LEGACY_SCHEDULER_FILE, _class_name="PNDMScheduler")))
    return out


def bench_size(name: str, folder: Path, size: int, steps: int, batches: list[int],
               repeats: int, with_torch: bool, log) -> list[list]:
    from jaxdiff.pipelines.loading import load_text_to_image
    from jaxdiff.pipelines.text_to_image import generate, latent_size

    t0 = time.perf_counter()
    model = load_text_to_image(folder)
    load_s = time.perf_counter() - t0
    log(f"{name}: jaxdiff loaded in {load_s:.1f} s")
    pipe = None
    if with_torch:
        import diffusers
        import torch

        from benchmarks.torch_reference import set_threads

        set_threads(os.cpu_count() or 1)
        t0 = time.perf_counter()
        pipe = diffusers.StableDiffusionPipeline.from_pretrained(
            folder, safety_checker=None, requires_safety_checker=False)
        pipe.scheduler = diffusers.DPMSolverMultistepScheduler.from_pretrained(
            folder / "scheduler")
        pipe.set_progress_bar_config(disable=True)
        log(f"{name}: diffusers loaded in {time.perf_counter() - t0:.1f} s")
    rows = []
    for batch in batches:
        latents = np.random.default_rng(batch).standard_normal(
            (batch, *latent_size(model, size, size))).astype(np.float32)
        prompts = [PROMPT] * batch

        def run_jaxdiff(prompts=prompts, latents=latents):
            return generate(model, prompts, num_steps=steps, method="dpmpp_2m",
                            guidance_scale=7.5, height=size, width=size, latents=latents)

        t0 = time.perf_counter()
        ours = run_jaxdiff()
        first_s = time.perf_counter() - t0
        runners = {"jaxdiff": run_jaxdiff}
        theirs = None
        if pipe is not None:
            import torch

            def run_diffusers(prompts=prompts, latents=latents):
                with torch.inference_mode():
                    return pipe(prompt=prompts, num_inference_steps=steps, guidance_scale=7.5,
                                height=size, width=size, output_type="np",
                                latents=torch.from_numpy(latents.transpose(0, 3, 1, 2).copy())
                                ).images

            t0 = time.perf_counter()
            theirs = run_diffusers() * 2.0 - 1.0
            first_theirs_s = time.perf_counter() - t0
            runners["diffusers"] = run_diffusers
        if repeats > 0:
            times = interleaved_times(runners, repeats=repeats, warmup=0)
        else:  # one steady jaxdiff call; diffusers' first call (no compilation) as its time
            times = {"jaxdiff": [timed(run_jaxdiff)[0]]}
            if theirs is not None:
                times["diffusers"] = [first_theirs_s]
        ours_s = median(times["jaxdiff"])
        row = [name, f"{size}x{size}", batch, steps, batch / ours_s,
               first_s - ours_s]
        if theirs is not None:
            theirs_s = median(times["diffusers"])
            row += [batch / theirs_s, theirs_s / ours_s, float(np.abs(ours - theirs).max())]
        else:
            row += ["-", "-", "-"]
        log(f"{name} batch {batch}: {row}")
        rows.append(row)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="tiny,sd15", help="comma-separated: tiny, sd15")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--batches", default="1,2")
    p.add_argument("--repeats", type=int, default=2,
                   help="alternating timed calls; 0: one steady call each (diffusers' first)")
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--keep", default=None, help="folder to keep the written pipelines in")
    p.add_argument("--out", default=str(Path(__file__).with_name("RESULTS.md")))
    args = p.parse_args(argv)
    from jaxdiff import xla_defaults

    xla_defaults.apply()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from tests.fixtures.tiny_sd_pipeline import make_tiny_sd_pipeline

    root = Path(args.keep or tempfile.mkdtemp(prefix="jaxdiff-bench-sd-"))
    batches = [int(b) for b in args.batches.split(",")]
    rows, start = [], time.perf_counter()
    for name in args.sizes.split(","):
        folder = root / name
        if not (folder / "model_index.json").exists():
            t0 = time.perf_counter()
            (make_tiny_sd_pipeline(folder) if name == "tiny" else write_sd15_pipeline(folder))
            print(f"{name}: wrote {folder} in {time.perf_counter() - t0:.0f} s", flush=True)
        size = 32 if name == "tiny" else 256
        rows += bench_size(name, folder, size, args.steps, batches, args.repeats,
                           not args.no_torch, lambda m: print(m, flush=True))
    table = markdown_table(
        ["pipeline", "image", "batch", "steps", "jaxdiff images/s", ("jaxdiff first-call "
         "compile (s)"), "diffusers images/s", "jaxdiff speed-up", "max |image diff|"], rows)
    text = (f"### Text to image (`python -m benchmarks.txt2img`, "
            f"{(time.perf_counter() - start) / 60:.1f} min)\n\n"
            f"{machine_markdown(machine_info())}\n"
            f"DPM-Solver++(2M), guidance 7.5, float32, random weights, same initial latents; "
            f"medians of {args.repeats} alternating calls (0: one call each); compile = first call minus a steady "
            f"call.\n\n{table}\n")
    print(text)
    from benchmarks.run import write_results

    write_results(Path(args.out), "txt2img", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
