"""TensorBoard event files, written with tensorboardX (no TensorFlow needed).

`EventWriter` appends scalars, pictures and session-start marks to one `events.out.tfevents.*`
file per writer. It writes synchronously and flushes after every call: tensorboardX's
`SummaryWriter` queues events for a background thread, so a run killed between two flushes would
lose the tail of its log. View with `tensorboard --logdir <run folder or its parent>`.

tensorboardX is imported on first use only, and without torch (see `_tensorboardx`).

Example:
  >>> writer = EventWriter(tmp_dir)                  # doctest: +SKIP
  >>> writer.scalars(100, {"train/loss": 0.12})      # doctest: +SKIP
"""

from __future__ import annotations

import itertools
import os
import sys
import time
from pathlib import Path

import numpy as np

from jaxdiff.validation import InputError, InputTypeError

_CHANNELS = (1, 3, 4)
_FILE_NUMBERS = itertools.count()  # keeps the file names of writers in one process distinct


def _tensorboardx():
    """(summary module, event_pb2 module, EventsWriter class) of tensorboardX.

    `import tensorboardX` imports torch when it is installed, only to accept torch tensors, which
    jaxdiff never passes; a JAX training process should not pay for (or hold) torch, so torch is
    hidden from that one import unless it is loaded already.
    """
    hide_torch = "tensorboardX" not in sys.modules and "torch" not in sys.modules
    if hide_torch:
        sys.modules["torch"] = None  # makes `import torch` raise ImportError
    try:
        from tensorboardX import summary
        from tensorboardX.event_file_writer import EventsWriter
        from tensorboardX.proto import event_pb2
    finally:
        if hide_torch:
            del sys.modules["torch"]
    return summary, event_pb2, EventsWriter


def check_uint8_image(image) -> np.ndarray:
    """uint8 (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) -> (H, W, C) numpy; else InputError."""
    a = np.asarray(image)
    if a.dtype != np.uint8:
        raise InputTypeError(f"images for TensorBoard must be uint8 pixels (see "
                             f"jaxdiff.viz.to_uint8, image_grid); got dtype {a.dtype}")
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[-1] not in _CHANNELS or 0 in a.shape:
        raise InputError(f"an image for TensorBoard must have shape (H, W) or (H, W, C) with C in "
                         f"{_CHANNELS}; got shape {np.asarray(image).shape}")
    return a


def is_number(value) -> bool:
    """True for ints and floats (and numpy scalars), not bools."""
    return isinstance(value, (int, float, np.integer, np.floating)) \
        and not isinstance(value, (bool, np.bool_))


class EventWriter:
    """Appends TensorBoard events to one `events.out.tfevents.*` file in `logdir`.

    The file (with its file-version event) is created on the first write; every call writes its
    event and flushes it to the operating system, so nothing is lost if the process dies.

    Args:
      logdir: folder for the event file (created if needed).
      filename_suffix: appended to the file name.
    """

    def __init__(self, logdir, filename_suffix: str = ""):
        self.logdir = Path(logdir)
        self.filename_suffix = filename_suffix
        self._writer = None

    def _write(self, event) -> None:
        if self._writer is None:
            self.logdir.mkdir(parents=True, exist_ok=True)
            _, _, events_writer = _tensorboardx()
            # tensorboardX names the file events.out.tfevents.<seconds>.<host><suffix>; the
            # process id and a counter keep two writers started in the same second apart.
            suffix = f".{os.getpid()}.{next(_FILE_NUMBERS):04d}{self.filename_suffix}"
            self._writer = events_writer(str(self.logdir / "events"), suffix)
        self._writer.write_event(event)
        self._writer.flush()

    def scalars(self, step: int, values: dict, wall_time: float | None = None) -> None:
        """One event at `step` with a float scalar per (tag, value); non-finite values are kept."""
        summary, event_pb2, _ = _tensorboardx()
        proto = summary.Summary()
        for tag, value in values.items():
            if not is_number(value):
                raise InputTypeError(f"scalar {tag!r} must be a number; got "
                                     f"{type(value).__name__}")
            proto.value.add(tag=str(tag), simple_value=float(value))
        if proto.value:
            self._write(event_pb2.Event(step=int(step), summary=proto,
                                        wall_time=time.time() if wall_time is None else wall_time))

    def image(self, step: int, tag: str, image, wall_time: float | None = None) -> None:
        """One event at `step` holding a uint8 picture (H, W[, C]) as PNG (grey pictures are
        stored as RGB)."""
        summary, event_pb2, _ = _tensorboardx()
        proto = summary.image(str(tag), check_uint8_image(image), dataformats="HWC")
        self._write(event_pb2.Event(step=int(step), summary=proto,
                                    wall_time=time.time() if wall_time is None else wall_time))

    def session_start(self, step: int) -> None:
        """Marks a restart at `step`: TensorBoard then drops older events with step >= `step`
        (used when a run resumes from a checkpoint and logs those steps again)."""
        _, event_pb2, _ = _tensorboardx()
        start = event_pb2.SessionLog(status=event_pb2.SessionLog.START)
        self._write(event_pb2.Event(step=int(step), session_log=start, wall_time=time.time()))
