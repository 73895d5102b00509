"""Progress display and metric logs for long work: steps/s, loss, ETA; metrics.jsonl and
TensorBoard event files per run.

In a terminal a tqdm bar is shown; otherwise (CI, pipes) one line per log interval.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path


def format_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
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


class MetricsLog:
    """Logs metrics of a run: one JSON object per log interval in `<workdir>/metrics.jsonl`, and
    the same numbers (plus pictures) as TensorBoard events in `<workdir>/events.out.tfevents.*`.

    Scalars are tagged "train/<key>" unless the key already holds a "/" (e.g. "eval/fid"), so
    TensorBoard groups them. View with `tensorboard --logdir <workdir or its parent>`.

    Args:
      workdir: the run folder.
      enabled: False on processes other than 0 (nothing is written).
      tensorboard: also write TensorBoard event files.
    """

    def __init__(self, workdir, enabled: bool = True, tensorboard: bool = True):
        self.path = Path(workdir) / "metrics.jsonl"
        self.enabled = enabled
        self.events = None
        if enabled and tensorboard:
            from jaxdiff.tensorboard import EventWriter

            self.events = EventWriter(workdir)

    @staticmethod
    def tag(key: str) -> str:
        return key if "/" in key else f"train/{key}"

    def write(self, step: int, metrics: dict) -> None:
        """Appends `{"step": step, **metrics}` to metrics.jsonl and the numbers to TensorBoard."""
        if not self.enabled:
            return
        from jaxdiff.tensorboard import is_number

        record = {"step": int(step)}
        record.update({k: (float(v) if is_number(v) else v) for k, v in metrics.items()})
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.events is not None:
            self.events.scalars(step, {self.tag(k): v for k, v in record.items()
                                       if k != "step" and is_number(v)})

    def write_image(self, step: int, name: str, image) -> None:
        """Adds a uint8 picture (H, W[, C]) (e.g. `jaxdiff.viz.image_grid(samples)`) to
        TensorBoard under the tag `name` (no-op without TensorBoard or when disabled)."""
        if self.enabled and self.events is not None:
            self.events.image(step, name, image)

    def truncate_after(self, step: int) -> None:
        """Drops records logged after `step` (a resumed run logs those steps again); TensorBoard
        is told by a session-start event at step + 1, which hides its older events from there."""
        if not self.enabled:
            return
        if self.events is not None:
            self.events.session_start(int(step) + 1)
        if not self.path.exists():
            return
        kept = [line for line in self.path.read_text().splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= step]
        tmp = self.path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        os.replace(tmp, self.path)
