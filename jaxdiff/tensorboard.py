"""TensorBoard event files written in pure Python: no TensorFlow, no tensorboard package.

An event file is a sequence of TFRecords, each holding one serialized `tensorflow.Event` protocol
buffer. A record is framed as

    uint64 length | uint32 masked_crc32c(length) | data | uint32 masked_crc32c(data)

(little-endian), with masked_crc(x) = ((crc >> 15) | (crc << 17)) + 0xa282ead8 mod 2^32 and CRC-32C
the Castagnoli polynomial (reflected 0x82F63B78; RFC 3720, appendix B.4). The few protobuf
messages needed are encoded by hand (field numbers from tensorflow/core/util/event.proto and
tensorflow/core/framework/summary.proto):

    Event      {1: double wall_time, 2: int64 step, 3: string file_version, 5: Summary summary,
                7: SessionLog session_log}
    Summary    {1: repeated Value value}
    Value      {1: string tag, 2: float simple_value, 4: Image image}
    Image      {1: int32 height, 2: int32 width, 3: int32 colorspace, 4: bytes encoded_image_string}
    SessionLog {1: enum status (START = 1)}

The file name contains "tfevents", which is how TensorBoard finds it: `tensorboard --logdir runs/`.

Example:
  >>> writer = EventWriter(tmp_dir)                  # doctest: +SKIP
  >>> writer.scalars(100, {"train/loss": 0.12})      # doctest: +SKIP
"""

from __future__ import annotations

import io
import itertools
import os
import socket
import struct
import time
from pathlib import Path

import numpy as np

_CRC32C_POLY = 0x82F63B78  # reflected Castagnoli polynomial
_MASK_DELTA = 0xA282EAD8
FILE_VERSION = "brain.Event:2"
SESSION_START = 1
#: Summary.Image colorspace per channel count (1 grayscale, 3 RGB, 4 RGBA).
_COLORSPACE = {1: 1, 3: 3, 4: 4}
_FILE_NUMBERS = itertools.count()  # keeps file names of writers in one process distinct


def _crc_table() -> tuple[int, ...]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ _CRC32C_POLY if c & 1 else c >> 1
        table.append(c)
    return tuple(table)


_TABLE = _crc_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli) of `data`; crc32c(b"123456789") == 0xE3069283."""
    crc = 0xFFFFFFFF
    table = _TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """The CRC that TFRecord stores: rotated right by 15 bits plus a constant, mod 2^32."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def tfrecord(data: bytes) -> bytes:
    """One TFRecord: length, its masked CRC, the data, the data's masked CRC."""
    length = struct.pack("<Q", len(data))
    return (length + struct.pack("<I", masked_crc32c(length)) + data
            + struct.pack("<I", masked_crc32c(data)))


# ----------------------------------------------------------------- protobuf wire format
def _varint(value: int) -> bytes:
    if value < 0:  # int64 negatives are 10-byte two's complement varints
        value += 1 << 64
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _key(field: int, wire_type: int) -> bytes:
    return _varint((field << 3) | wire_type)


def _int_field(field: int, value: int) -> bytes:
    return _key(field, 0) + _varint(int(value))


def _bytes_field(field: int, value: bytes) -> bytes:
    return _key(field, 2) + _varint(len(value)) + value


def _double_field(field: int, value: float) -> bytes:
    return _key(field, 1) + struct.pack("<d", value)


def _float_field(field: int, value: float) -> bytes:
    return _key(field, 5) + struct.pack("<f", value)


def encode_event(step: int, wall_time: float, *, summary_values: list[bytes] | None = None,
                 file_version: str | None = None, session_start: bool = False) -> bytes:
    """A serialized Event with one of: a Summary of encoded Values, a file_version, a START."""
    body = _double_field(1, wall_time) + _int_field(2, step)
    if file_version is not None:
        body += _bytes_field(3, file_version.encode())
    if summary_values is not None:
        body += _bytes_field(5, b"".join(_bytes_field(1, v) for v in summary_values))
    if session_start:
        body += _bytes_field(7, _int_field(1, SESSION_START))
    return body


def scalar_value(tag: str, value: float) -> bytes:
    """A Summary.Value with a float32 `simple_value`."""
    return _bytes_field(1, tag.encode()) + _float_field(2, float(value))


def _png_bytes(image: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buffer, format="PNG")
    return buffer.getvalue()


def check_uint8_image(image) -> np.ndarray:
    """uint8 (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) -> (H, W, C) numpy; else ValueError."""
    a = np.asarray(image)
    if a.dtype != np.uint8:
        raise TypeError(f"images for TensorBoard must be uint8 pixels (see jaxdiff.viz.to_uint8, "
                        f"image_grid); got dtype {a.dtype}")
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[-1] not in _COLORSPACE or 0 in a.shape:
        raise ValueError(f"an image for TensorBoard must have shape (H, W) or (H, W, C) with C in "
                         f"(1, 3, 4); got shape {np.asarray(image).shape}")
    return a


def image_value(tag: str, image) -> bytes:
    """A Summary.Value with a PNG-encoded Summary.Image of a uint8 (H, W[, C]) picture."""
    a = check_uint8_image(image)
    height, width, channels = a.shape
    encoded = (_int_field(1, height) + _int_field(2, width) + _int_field(3, _COLORSPACE[channels])
               + _bytes_field(4, _png_bytes(a)))
    return _bytes_field(1, tag.encode()) + _bytes_field(4, encoded)


class EventWriter:
    """Appends TensorBoard events to one `events.out.tfevents.*` file in `logdir`.

    The file is created on the first write, starting with the file-version event; every call
    appends its records and closes the file again, so nothing is lost if the process dies and
    there is nothing to close.

    Args:
      logdir: folder for the event file (created if needed).
      filename_suffix: appended to the file name.
    """

    def __init__(self, logdir, filename_suffix: str = ""):
        self.logdir = Path(logdir)
        self.filename_suffix = filename_suffix
        self.path: Path | None = None

    def _append(self, *events: bytes) -> None:
        if self.path is None:
            self.logdir.mkdir(parents=True, exist_ok=True)
            now = time.time()
            name = (f"events.out.tfevents.{int(now):010d}.{socket.gethostname()}.{os.getpid()}."
                    f"{next(_FILE_NUMBERS)}{self.filename_suffix}")
            self.path = self.logdir / name
            events = (encode_event(0, now, file_version=FILE_VERSION),) + events
        with open(self.path, "ab") as f:
            f.write(b"".join(tfrecord(e) for e in events))

    def scalars(self, step: int, values: dict, wall_time: float | None = None) -> None:
        """One event at `step` with a float scalar per (tag, value); non-finite values are kept."""
        encoded = []
        for tag, value in values.items():
            if not is_number(value):
                raise TypeError(f"scalar {tag!r} must be a number; got {type(value).__name__}")
            encoded.append(scalar_value(str(tag), float(value)))
        if encoded:
            self._append(encode_event(int(step), time.time() if wall_time is None else wall_time,
                                      summary_values=encoded))

    def image(self, step: int, tag: str, image, wall_time: float | None = None) -> None:
        """One event at `step` holding a uint8 picture (H, W[, C]) as PNG."""
        self._append(encode_event(int(step), time.time() if wall_time is None else wall_time,
                                  summary_values=[image_value(str(tag), image)]))

    def session_start(self, step: int) -> None:
        """Marks a restart at `step`: TensorBoard then drops older events with step >= `step`
        (used when a run resumes from a checkpoint and logs those steps again)."""
        self._append(encode_event(int(step), time.time(), session_start=True))


def is_number(value) -> bool:
    """True for ints and floats (and numpy scalars), not bools."""
    return isinstance(value, (int, float, np.integer, np.floating)) \
        and not isinstance(value, (bool, np.bool_))
