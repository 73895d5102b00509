"""Progress display for long work (training, sampling): steps/s, loss, ETA.

In a terminal a tqdm bar is shown; otherwise (CI, pipes) one line per log interval. The records
a run keeps (metrics.jsonl, TensorBoard) are written by `jaxdiff.metrics_log`.
"""

from __future__ import annotations

import math
import os
import sys
import time


def format_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = round(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def format_metrics(metrics: dict) -> str:
    parts = []
    for k, v in metrics.items():
        if isinstance(v, float):
            parts.append(f"{k} {v:.4g}")
        else:
            parts.append(f"{k} {v}")
    return " ".join(parts)


class Progress:
    """Shows progress of `total` units of work starting at `start`; `update(n, metrics)`."""

    def __init__(self, total: int, start: int = 0, desc: str = "train", unit: str = "step",
                 enabled: bool = True, stream=None):
        self.total, self.position, self.desc, self.unit = total, start, desc, unit
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.start_time = time.perf_counter()
        self.last_time, self.last_position = self.start_time, start
        self.bar = None
        if enabled and self.stream.isatty() and os.environ.get("CI") != "true":
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=start, desc=desc, unit=unit, file=self.stream,
                            dynamic_ncols=True)

    def restart(self, position: int) -> None:
        """Measures rates from here on (e.g. after the first step, which includes compiling)."""
        if self.bar is not None:
            self.bar.update(position - self.position)
        self.position = position
        self.last_time, self.last_position = time.perf_counter(), position

    def rate(self) -> float:
        """Units per second since the previous call."""
        now = time.perf_counter()
        done = self.position - self.last_position
        rate = done / max(now - self.last_time, 1e-9)
        self.last_time, self.last_position = now, self.position
        return rate

    def update(self, position: int, metrics: dict | None = None) -> float:
        """Moves to `position`, prints metrics; returns the recent rate (units/s)."""
        advanced = position - self.position
        self.position = position
        rate = self.rate()
        if not self.enabled:
            return rate
        eta = (self.total - position) / rate if rate > 0 else float("inf")
        if self.bar is not None:
            self.bar.update(advanced)
            if metrics:
                self.bar.set_postfix_str(format_metrics(metrics))
        else:
            text = f"{self.desc} {self.unit} {position}/{self.total}"
            if metrics:
                text += " " + format_metrics(metrics)
            text += f" {rate:.3g} {self.unit}s/s ETA {format_duration(eta)}"
            print(text, file=self.stream, flush=True)
        return rate

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
