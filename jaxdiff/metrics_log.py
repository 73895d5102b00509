"""A run's metric records: `metrics.jsonl` (one JSON object per log interval) and the same
numbers as TensorBoard event files."""

from __future__ import annotations

import json
from pathlib import Path

from jaxdiff.atomic_file import atomic_write


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
        with atomic_write(self.path, "w") as f:
            f.write("".join(line + "\n" for line in kept))
