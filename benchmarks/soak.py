"""Soak test: a long `jaxdiff train` run (tiny model) watched for growing memory and disk use.

Runs the real CLI in a subprocess (2000 steps, a checkpoint every 100, keep 3 by default) and
samples, every 0.5 s, the process's resident memory (VmRSS from /proc) and the size of the
checkpoints folder. Reports the RSS at the first logged step at or after `--warmup` and at the
last step, the median RSS over the first and the last quarter of the training after warm-up,
the largest checkpoints folder seen, and the checkpoints present at the end. Exits 1 when the
median RSS grew by more than `--max_rss_growth_mb` between those quarters or the folder held
more than keep + 1 steps (keep, plus one being written).

Run (about 3-10 minutes on a 2-core CPU):
  python benchmarks/soak.py --steps 2000 --out soak.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

TINY = ["--config.model.base_channels=8", "--config.model.channel_mults=1,2",
        "--config.model.attention_resolutions=8",
        "--config.model.num_res_blocks=1", "--config.model.num_heads=2",
        "--config.model.num_groups=4", "--config.train.batch_size=8",
        "--config.optim.warmup_steps=10", "--config.sampling.num_steps=2",
        "--config.sampling.num_samples=2"]


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def folder_mb(path: Path) -> float:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except FileNotFoundError:  # removed by orbax while we walk
                pass
    return total / 2**20


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--every", type=int, default=100, help="checkpoint every N steps")
    parser.add_argument("--keep", type=int, default=3, help="checkpoint.max_to_keep")
    parser.add_argument("--report_step", type=int, default=200,
                        help="also report the RSS at this step")
    parser.add_argument("--warmup", type=int, default=500,
                        help="step from which RSS must hold (the compiler's memory is released "
                             "around step 400-500 of the tiny model)")
    parser.add_argument("--max_rss_growth_mb", type=float, default=50.0)
    parser.add_argument("--workdir", default=None, help="default: a new temporary folder")
    parser.add_argument("--out", default=None, help="write the samples and summary as JSON")
    args = parser.parse_args(argv)

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="jaxdiff-soak-")) / "run"
    command = [sys.executable, "-m", "jaxdiff.cli", "train", "--workdir", str(workdir), *TINY,
               f"--config.train.num_steps={args.steps}",
               f"--config.train.log_every={min(args.every, 50)}",
               f"--config.checkpoint.every_steps={args.every}",
               f"--config.checkpoint.max_to_keep={args.keep}"]
    env = dict(os.environ, CI="true")
    started = time.monotonic()
    process = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                               text=True, env=env)
    samples, step = [], [0]
    stderr_tail: list[str] = []

    def read_stderr():
        for line in process.stderr:
            stderr_tail.append(line)
            del stderr_tail[:-40]
            match = re.search(r"step (\d+)/", line)
            if match:
                step[0] = int(match.group(1))

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    ckpt_dir = workdir / "checkpoints"
    while process.poll() is None:
        rss = rss_mb(process.pid)
        if rss is not None:
            steps_on_disk = sorted(int(p.name) for p in ckpt_dir.iterdir() if p.name.isdigit()) \
                if ckpt_dir.is_dir() else []
            samples.append({"time_s": round(time.monotonic() - started, 1), "step": step[0],
                            "rss_mb": round(rss, 1),
                            "checkpoints_mb": round(folder_mb(ckpt_dir), 2),
                            "checkpoint_steps": steps_on_disk})
        time.sleep(0.5)
    reader.join(timeout=10)
    if process.returncode != 0:
        print("".join(stderr_tail), file=sys.stderr)
        print(f"soak: training failed with exit code {process.returncode}", file=sys.stderr)
        return 2

    after_warmup = [s for s in samples if s["step"] >= args.warmup]
    first = after_warmup[0] if after_warmup else samples[0]
    # The last sample while training (afterwards the run compiles and draws its sample grid).
    training = [s for s in after_warmup if s["step"] < args.steps] or after_warmup or samples
    end = next((s for s in samples if s["step"] >= args.steps), samples[-1])
    quarter = max(1, len(training) // 4)
    early = sorted(s["rss_mb"] for s in training[:quarter])[quarter // 2]
    late = sorted(s["rss_mb"] for s in training[-quarter:])[quarter // 2]
    most_steps = max(len(s["checkpoint_steps"]) for s in samples)
    final_steps = sorted(int(p.name) for p in ckpt_dir.iterdir() if p.name.isdigit())
    summary = {
        "steps": args.steps, "every": args.every, "keep": args.keep,
        "wall_s": round(time.monotonic() - started, 1),
        "rss_mb_at_report_step": next(({"step": s["step"], "rss_mb": s["rss_mb"]} for s in samples
                                       if s["step"] >= args.report_step), None),
        "rss_mb_at_warmup": {"step": first["step"], "rss_mb": first["rss_mb"]},
        "rss_mb_at_last_step": {"step": end["step"], "rss_mb": end["rss_mb"]},
        "rss_mb_median_first_quarter_after_warmup": early,
        "rss_mb_median_last_quarter": late,
        "rss_growth_after_warmup_mb": round(late - early, 1),
        "rss_mb_peak": max(s["rss_mb"] for s in samples),
        "rss_mb_after_final_sampling": samples[-1]["rss_mb"],
        "checkpoints_mb_max": max(s["checkpoints_mb"] for s in samples),
        "checkpoints_mb_final": round(folder_mb(ckpt_dir), 2),
        "most_checkpoint_steps_seen": most_steps,
        "final_checkpoint_steps": final_steps,
    }
    print("time_s  step  rss_mb  ckpt_mb  steps_on_disk")
    shown = samples[:: max(1, len(samples) // 25)] + [samples[-1]]
    for s in shown:
        print(f"{s['time_s']:6.1f} {s['step']:5d} {s['rss_mb']:7.1f} {s['checkpoints_mb']:8.2f}  "
              f"{s['checkpoint_steps']}")
    print(json.dumps(summary, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps({"summary": summary, "samples": samples}, indent=1))
    ok = (summary["rss_growth_after_warmup_mb"] <= args.max_rss_growth_mb
          and most_steps <= args.keep + 1 and len(final_steps) == args.keep)
    print("soak:", "OK" if ok else "FAILED (see the limits in --help)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
