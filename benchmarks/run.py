"""Runs every speed benchmark, prints one markdown report and writes it into RESULTS.md.

Run from the repository root, with torch and diffusers installed for the side-by-side columns
(`pip install -e .[bench]`; without them those columns are left out):

    python -m benchmarks.run            # full: about 10 minutes on an idle 2-core CPU
    python -m benchmarks.run --quick    # fewer repetitions and steps: about 2 minutes

Sections: training step (jaxdiff vs diffusers, 16x16x1 and 32x32x3, batch 64), MFU, sampling
(DDIM 50, DDPM 1000: scan vs Python loop vs diffusers), compile times, start-up (imports, CLI
first call, peak RSS of training), simulated-device scaling, and on an accelerator the cifar10
preset. The report replaces the block between `<!-- BEGIN <mode> -->` and `<!-- END <mode> -->`
in RESULTS.md (appended if absent); the rest of the file (the analysis) is kept.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
import time
from pathlib import Path

from benchmarks import common

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
SECTIONS = ("train", "mfu", "sampling", "compile", "startup", "scaling", "accelerator")

# Acceptance targets (jaxdiff / reference, lower is better, except scan speed-up).
TARGET_TRAIN_RATIO = 0.8
TARGET_SAMPLING_RATIO = 0.7
TARGET_SCAN_SPEEDUP = 1.1
TARGET_COMPILE_RATIO = 1.3


@dataclasses.dataclass(frozen=True)
class Settings:
    batch_size: int = 64
    train_steps: int = 10
    ddim_steps: int = 50
    ddpm_steps: int = 1000
    sampling_repeats: int = 3
    ddpm_repeats: int = 1
    compile_steps: tuple[int, ...] = (10, 100, 1000)
    cli_train_steps: int = 20
    cli_sample_steps: int = 50
    scaling_devices: tuple[int, ...] = (1, 2, 4)
    scaling_steps: int = 5
    model_overrides: tuple[tuple[str, object], ...] = ()


MODES = {
    "full": Settings(),
    "quick": Settings(train_steps=4, sampling_repeats=1, ddpm_steps=20, cli_train_steps=3,
                      cli_sample_steps=10, scaling_devices=(1, 2), scaling_steps=2),
    # A few-second smoke run of the harness with a tiny UNet (used by the tests).
    "tiny": Settings(batch_size=4, train_steps=2, ddim_steps=3, ddpm_steps=4,
                     sampling_repeats=1, compile_steps=(2, 8), cli_train_steps=2,
                     cli_sample_steps=2, scaling_devices=(1, 2), scaling_steps=1,
                     model_overrides=(("base_channels", 8), ("channel_mults", (1, 2)),
                                      ("attention_resolutions", (8,)), ("num_groups", 4),
                                      ("num_res_blocks", 1), ("num_heads", 1))),
}


def _cli_value(v) -> str:
    return "(" + ",".join(map(str, v)) + ")" if isinstance(v, tuple) else str(v)


def _check(ok: bool) -> str:
    return "met" if ok else "NOT met"


def run_sections(settings: Settings, sections, with_torch: bool, log=print) -> dict:
    """Runs the chosen sections; returns {section: result}."""
    from benchmarks import compile_time, mfu, sampling_speed, scaling, startup, train_step

    s = settings
    overrides = dict(s.model_overrides)
    out = {}

    def stage(name):
        log(f"[benchmarks] {name} ... (load average {common.load_average()[0]:.1f})")

    if "train" in sections or "mfu" in sections:
        stage("training step")
        out["train"] = train_step.compare(batch_size=s.batch_size, steps=s.train_steps,
                                          with_torch=with_torch, **overrides)
    if "mfu" in sections:
        stage("matmul peak")
        peak = mfu.matmul_peak(512 if overrides else 2048)
        out["mfu"] = {"peak_flops": peak, "rows": [
            {"shape": r["shape"], "flops": r["flops"], "jax_ms": r["jax_ms"],
             "jax_mfu": r["flops"] / (r["jax_ms"] / 1e3) / peak,
             "torch_mfu": (r["flops"] / (r["torch_ms"] / 1e3) / peak
                           if r["torch_ms"] else None)} for r in out["train"]]}
    if "sampling" in sections:
        stage("sampling")
        config = train_step.config_for_shape("16x16x1", s.batch_size, **overrides)
        rows = sampling_speed.compare((("ddim", s.ddim_steps),), s.batch_size,
                                      s.sampling_repeats, config, with_torch)
        rows += sampling_speed.compare((("ddpm", s.ddpm_steps),), s.batch_size,
                                       s.ddpm_repeats, config, with_torch)
        out["sampling"] = rows
    if "compile" in sections:
        stage("compile times")
        config = train_step.config_for_shape("16x16x1", s.batch_size, **overrides)
        out["compile"] = compile_time.run(config, s.compile_steps)
    if "startup" in sections:
        stage("start-up")
        cli_overrides = tuple(f"--config.model.{k}={_cli_value(v)}" for k, v in overrides.items())
        out["startup"] = startup.run(s.cli_train_steps, s.cli_sample_steps, cli_overrides)
    if "scaling" in sections:
        stage("scaling")
        out["scaling"] = scaling.cpu_scaling(s.scaling_devices, s.batch_size, s.scaling_steps,
                                             overrides)
    if "accelerator" in sections:
        out["accelerator"] = scaling.accelerator_cifar10()
    return out


def targets(results: dict) -> list[str]:
    lines = []
    for r in results.get("train", []):
        if r["ratio"] is not None:
            lines.append(f"- training step {r['shape']}: jaxdiff/diffusers = {r['ratio']:.2f}x "
                         f"(target <= {TARGET_TRAIN_RATIO}x): "
                         f"{_check(r['ratio'] <= TARGET_TRAIN_RATIO)}")
    for r in results.get("sampling", []):
        name = f"{r['method'].upper()} {r['steps']}"
        if "scan_over_diffusers" in r:
            x = r["scan_over_diffusers"]
            lines.append(f"- sampling {name}: jaxdiff/diffusers = {x:.2f}x (target <= "
                         f"{TARGET_SAMPLING_RATIO}x): {_check(x <= TARGET_SAMPLING_RATIO)}")
        speedup = 1.0 / r["scan_over_loop"]
        lines.append(f"- sampling {name}: scan is {speedup:.2f}x as fast as the Python loop "
                     f"(target >= {TARGET_SCAN_SPEEDUP}x): "
                     f"{_check(speedup >= TARGET_SCAN_SPEEDUP)}")
    if "compile" in results:
        c = results["compile"]
        lines.append(f"- sampler compile time {c['steps'][-1]} vs {c['steps'][0]} steps: "
                     f"{c['sampler_ratio']:.2f}x wall, {c['sampler_ratio_cpu']:.2f}x CPU "
                     f"(target <= {TARGET_COMPILE_RATIO}x): "
                     f"{_check(c['sampler_ratio_cpu'] <= TARGET_COMPILE_RATIO)}")
    return lines


def report(results: dict, info: dict, mode: str, elapsed_s: float, with_torch: bool) -> str:
    from benchmarks import compile_time, sampling_speed, scaling, startup, train_step

    parts = [f"### Mode `{mode}` ({elapsed_s / 60:.1f} min)\n", common.machine_markdown(info)]
    parts.append("- Threads: XLA's CPU client uses one thread per core "
                 f"({info['cores']}); torch.set_num_threads({info['cores']}) and "
                 "set_num_interop_threads, OMP_WAIT_POLICY=PASSIVE. "
                 "jaxdiff and diffusers are called alternately in one process; medians.\n"
                 if with_torch else "- torch/diffusers not installed: jaxdiff columns only.\n")
    if "train" in results:
        r0 = results["train"][0]
        parts.append("\n**Training step** (forward + MSE + backward + clip + AdamW + EMA)\n")
        parts.append(train_step.compare_table(results["train"]))
        parts.append(f"\nDefault digits model: batch {r0['batch']}, {r0['jax_ms']:.0f} ms per "
                     f"step, {r0['batch'] / r0['jax_ms'] * 1e3:.0f} images/s, compile "
                     f"{r0['jax_compile_s']:.1f} s.\n")
    if "mfu" in results:
        m = results["mfu"]
        parts.append(f"\n**MFU** (XLA cost-analysis FLOPs / step time, against a measured "
                     f"float32 matmul peak of {m['peak_flops'] / 1e9:.0f} GFLOP/s)\n")
        parts.append(common.markdown_table(
            ["shape", "GFLOP per step", "jaxdiff GFLOP/s", "jaxdiff MFU",
             "diffusers MFU (same FLOPs)"],
            [[r["shape"], r["flops"] / 1e9, r["flops"] / r["jax_ms"] * 1e-6,
              f"{100 * r['jax_mfu']:.0f}%",
              "-" if r["torch_mfu"] is None else f"{100 * r['torch_mfu']:.0f}%"]
             for r in m["rows"]]))
        parts.append("")
    # (results key, heading, what the figures are, table renderer); a section with no
    # figures (e.g. no accelerator) is left out.
    table_sections = (
        ("sampling", "Sampling", "(seconds per batch)", sampling_speed.table),
        ("compile", "Compile time", "(ahead of time, nothing executed)", compile_time.table),
        ("startup", "Start-up and memory", "", startup.table),
        ("scaling", "Simulated CPU devices", "(same physical cores: overhead, not speed-up)",
         scaling.cpu_table),
        ("accelerator", "cifar10 preset on the accelerator", "", scaling.accelerator_table),
    )
    for key, heading, note, table in table_sections:
        if results.get(key):
            parts.append(f"\n**{heading}** {note}".rstrip() + "\n")
            parts.append(table(results[key]))
            parts.append("")
    lines = targets(results)
    if lines:
        parts.append("\n**Targets**\n")
        parts.append("\n".join(lines))
    return "\n".join(parts).strip() + "\n"


def write_results(path: Path, mode: str, text: str) -> None:
    begin, end = f"<!-- BEGIN {mode} -->", f"<!-- END {mode} -->"
    block = f"{begin}\n{text}{end}"
    old = path.read_text() if path.exists() else "# Benchmark results\n"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
    new = pattern.sub(lambda _: block, old) if pattern.search(old) else (
        old.rstrip("\n") + "\n\n" + block + "\n")
    path.write_text(new)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer repetitions and steps")
    p.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--only", default=None, help=f"comma-separated subset of {SECTIONS}")
    p.add_argument("--no-torch", action="store_true", help="leave diffusers out")
    p.add_argument("--results", default=None, help="markdown file to update "
                   "(default benchmarks/RESULTS.md; none in --tiny mode)")
    p.add_argument("--no-write", action="store_true")
    p.add_argument("--json", default=None, help="also write the raw results here")
    args = p.parse_args(argv)
    mode = "tiny" if args.tiny else "quick" if args.quick else "full"
    sections = tuple(args.only.split(",")) if args.only else SECTIONS
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        raise SystemExit(f"unknown section(s) {unknown}; choose from {list(SECTIONS)}")
    with_torch = common.torch_available() and not args.no_torch
    t0 = time.perf_counter()
    results = run_sections(MODES[mode], sections, with_torch,
                           log=lambda m: print(m, file=sys.stderr, flush=True))
    info = common.machine_info()
    text = report(results, info, mode, time.perf_counter() - t0, with_torch)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": info, "results": results},
                                              default=str, indent=1))
    path = Path(args.results) if args.results else (None if mode == "tiny" else RESULTS)
    if path is not None and not args.no_write:
        write_results(path, mode, text)
        print(f"updated {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
