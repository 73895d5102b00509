"""Start-up costs: import times, peak memory of a training run, first-call latency of the CLI.

Run from the repository root:

    python -m benchmarks.startup [--train-steps 20] [--sample-steps 50]

- import time of `import jaxdiff`, `import jaxdiff.cli` (both lazy) and `import
  jaxdiff.training` (jax, flax, optax): each in a fresh interpreter, the median of 3;
- peak resident memory (max RSS) of `jaxdiff train` with the default digits config for a few
  steps (a fresh process, its own `ru_maxrss`), and its wall time;
- first-call latency of `jaxdiff sample` on that freshly trained workdir: the wall time of the
  whole command (interpreter start, imports, checkpoint restore, compilation, sampling, PNG).

The CLI is run as `<python> -m jaxdiff.cli` (what the `jaxdiff` console script calls).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import markdown_table

REPO = Path(__file__).resolve().parents[1]


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.setdefault("JAX_PLATFORMS", "cpu")
    return env


# Runs argv[1:] and prints its exit code, wall seconds and peak RSS as the last line. A child's
# ru_maxrss starts from the high-water mark of the process it was forked from, so the command is
# started from this small launcher, not from the (large) benchmark process.
_LAUNCHER = """
import resource, subprocess, sys, time
t = time.perf_counter()
rc = subprocess.run(sys.argv[1:]).returncode
wall = time.perf_counter() - t
print(rc, wall, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def run_measured(cmd: list[str], cwd: str | None = None) -> dict:
    """Runs `cmd`; returns wall seconds, peak RSS (MiB) of that process, exit code and output."""
    r = subprocess.run([sys.executable, "-c", _LAUNCHER, *cmd], cwd=cwd or str(REPO),
                       env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
    lines = r.stdout.rstrip().splitlines()
    rc, wall, rss_kib = lines[-1].split()
    return {"wall_s": float(wall), "max_rss_mib": int(rss_kib) / 1024, "rc": int(rc),
            "output": "\n".join(lines[:-1])[-2000:]}


def import_time(module: str, repeats: int = 3) -> float:
    """Median seconds of `import module` in a fresh interpreter (the interpreter start excluded)."""
    code = (f"import time; t = time.perf_counter(); import {module}; "
            f"print(time.perf_counter() - t)")
    times = []
    for _ in range(repeats):
        r = subprocess.run([sys.executable, "-c", code], cwd=str(REPO), env=_env(),
                           capture_output=True, text=True, check=True)
        times.append(float(r.stdout.strip().splitlines()[-1]))
    return statistics.median(times)


def train_and_sample(train_steps: int = 20, sample_steps: int = 50, num: int = 64,
                     overrides: tuple[str, ...] = ()) -> dict:
    """Trains the digits preset for `train_steps` steps in a temporary workdir, then samples."""
    with tempfile.TemporaryDirectory(prefix="jaxdiff-bench-") as tmp:
        workdir = Path(tmp) / "run"
        cli = [sys.executable, "-m", "jaxdiff.cli"]
        train = run_measured(cli + [
            "train", "--workdir", str(workdir), "--config", "digits",
            f"--config.train.num_steps={train_steps}", f"--config.data.data_dir={tmp}/tfds",
            f"--config.checkpoint.every_steps={train_steps}",
            f"--config.train.log_every={max(1, train_steps // 2)}", *overrides])
        if train["rc"] != 0:
            raise RuntimeError(f"jaxdiff train failed ({train['rc']}):\n{train['output']}")
        sample = run_measured(cli + ["sample", "--workdir", str(workdir), "--num", str(num),
                                     "--steps", str(sample_steps), "--out",
                                     str(Path(tmp) / "s.png")])
        if sample["rc"] != 0:
            raise RuntimeError(f"jaxdiff sample failed ({sample['rc']}):\n{sample['output']}")
    return {"train_steps": train_steps, "train_wall_s": train["wall_s"],
            "train_max_rss_mib": train["max_rss_mib"], "sample_steps": sample_steps,
            "sample_num": num, "sample_wall_s": sample["wall_s"],
            "sample_max_rss_mib": sample["max_rss_mib"]}


def run(train_steps: int = 20, sample_steps: int = 50, overrides: tuple[str, ...] = ()) -> dict:
    out = {"import_jaxdiff_s": import_time("jaxdiff"),
           "import_jaxdiff_cli_s": import_time("jaxdiff.cli"),
           "import_jaxdiff_training_s": import_time("jaxdiff.training")}
    out.update(train_and_sample(train_steps, sample_steps, overrides=overrides))
    return out


def table(r: dict) -> str:
    return markdown_table(["what", "value"], [
        ["`import jaxdiff`", f"{r['import_jaxdiff_s']:.2f} s"],
        ["`import jaxdiff.cli`", f"{r['import_jaxdiff_cli_s']:.2f} s"],
        ["`import jaxdiff.training` (pulls in jax, flax, optax)",
         f"{r['import_jaxdiff_training_s']:.2f} s"],
        [f"`jaxdiff train` digits, {r['train_steps']} steps: wall time",
         f"{r['train_wall_s']:.1f} s"],
        [f"`jaxdiff train` digits, {r['train_steps']} steps: peak RSS",
         f"{r['train_max_rss_mib']:.0f} MiB"],
        [(f"`jaxdiff sample --num {r['sample_num']} --steps {r['sample_steps']}` first call "
          "(wall)"), f"{r['sample_wall_s']:.1f} s"],
        ["`jaxdiff sample`: peak RSS", f"{r['sample_max_rss_mib']:.0f} MiB"],
    ])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--train-steps", type=int, default=20)
    p.add_argument("--sample-steps", type=int, default=50)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    r = run(args.train_steps, args.sample_steps)
    print(json.dumps(r) if args.json else table(r))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
