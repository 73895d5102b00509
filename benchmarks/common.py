"""What every benchmark shares: the machine description, interleaved timing, markdown tables.

Timings on a shared CPU are noisy, so comparisons are never made between separate runs: the
runners of one comparison (e.g. jaxdiff and diffusers) are called alternately in one process,
each call timed on its own (`interleaved_times`), and the comparison is the ratio of medians.
"""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import time
from collections.abc import Callable
from importlib import metadata

# The two libraries compared. torch is imported lazily (the JAX side must run without it).
VERSIONED = ("jax", "jaxlib", "flax", "optax", "numpy", "torch", "diffusers")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def ram_gib() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        return float("nan")


def versions() -> dict[str, str]:
    out = {}
    for name in VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def load_average() -> tuple[float, float, float]:
    try:
        return os.getloadavg()
    except OSError:
        return (float("nan"),) * 3


def machine_info() -> dict:
    """CPU model, cores, RAM, library versions, date and current load average."""
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "ram_gib": round(ram_gib(), 1),
        "python": platform.python_version(),
        "versions": versions(),
        "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "load_average": tuple(round(x, 2) for x in load_average()),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }


def machine_markdown(info: dict) -> str:
    v = info["versions"]
    libs = ", ".join(f"{k} {v[k]}" for k in VERSIONED)
    return (f"- CPU: {info['cpu']}, {info['cores']} cores, {info['ram_gib']} GiB RAM; "
            f"Python {info['python']}\n- Versions: {libs}\n- Date: {info['date']}; "
            f"load average (1/5/15 min) at the end: {info['load_average']}\n")


def interleaved_times(runners: dict[str, Callable[[], object]], *, repeats: int,
                      warmup: int = 1) -> dict[str, list[float]]:
    """Seconds per call of each runner, calling them alternately.

    Each runner must block until its work is done. After `warmup` untimed calls each, the runners
    are called round-robin `repeats` times (the order reversed every other round, so that none is
    always first after the others), each call timed separately.

    Returns:
      {name: [seconds of call 1, ..., call `repeats`]}.
    """
    names = list(runners)
    for _ in range(warmup):
        for name in names:
            runners[name]()
    times = {name: [] for name in names}
    for r in range(repeats):
        for name in (names if r % 2 == 0 else names[::-1]):
            t0 = time.perf_counter()
            runners[name]()
            times[name].append(time.perf_counter() - t0)
    return times


def median(xs) -> float:
    return float(statistics.median(xs))


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    """(seconds, result) of one call."""
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def markdown_table(headers: list[str], rows: list[list]) -> str:
    def fmt(x):
        if isinstance(x, float):
            return f"{x:.3g}" if abs(x) < 100 else f"{x:.0f}"
        return str(x)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(fmt(x) for x in row) + " |" for row in rows]
    return "\n".join(lines)


def torch_available() -> bool:
    """Whether torch and diffusers are installed (without importing them: torch must first be
    imported by `torch_reference`, which sets its OpenMP wait policy)."""
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("torch", "diffusers"))
