"""Run logs: TensorBoard event files (read back with an independent parser), metrics.jsonl, and
the progress display (a bar in a terminal, one line per interval otherwise)."""

import io
import json
import struct

import numpy as np
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from PIL import Image

from jaxdiff.progress import MetricsLog, Progress
from jaxdiff.tensorboard import EventWriter, crc32c


# --------------------------------------------------------------- an independent reader
def _bitwise_crc32c(data: bytes) -> int:
    """CRC-32C bit by bit (no table): reflected polynomial 0x82F63B78, RFC 3720 B.4."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 * (crc & 1))
    return crc ^ 0xFFFFFFFF


def _masked(data: bytes) -> int:
    crc = _bitwise_crc32c(data)
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def _read_records(path) -> list[bytes]:
    """TFRecord framing, checking both CRCs of every record."""
    data, records, pos = path.read_bytes(), [], 0
    while pos < len(data):
        header = data[pos:pos + 8]
        (length,) = struct.unpack("<Q", header)
        assert struct.unpack("<I", data[pos + 8:pos + 12])[0] == _masked(header)
        body = data[pos + 12:pos + 12 + length]
        assert struct.unpack("<I", data[pos + 12 + length:pos + 16 + length])[0] == _masked(body)
        records.append(body)
        pos += 16 + length
    return records


def _event_class():
    """tensorflow.Event and the messages it needs, declared with field numbers of event.proto and
    summary.proto, decoded by the protobuf library."""
    f = descriptor_pb2.FileDescriptorProto(name="jaxdiff_test_event.proto", package="t",
                                           syntax="proto3")
    T = descriptor_pb2.FieldDescriptorProto

    def message(name, fields):
        m = f.message_type.add(name=name)
        for fname, number, ftype, type_name, label in fields:
            field = m.field.add(name=fname, number=number, type=ftype,
                                label=label or T.LABEL_OPTIONAL)
            if type_name:
                field.type_name = type_name

    message("Image", [("height", 1, T.TYPE_INT32, None, None), ("width", 2, T.TYPE_INT32, None,
                      None), ("colorspace", 3, T.TYPE_INT32, None, None),
                      ("encoded_image_string", 4, T.TYPE_BYTES, None, None)])
    message("Value", [("tag", 1, T.TYPE_STRING, None, None),
                      ("simple_value", 2, T.TYPE_FLOAT, None, None),
                      ("image", 4, T.TYPE_MESSAGE, ".t.Image", None)])
    message("Summary", [("value", 1, T.TYPE_MESSAGE, ".t.Value", T.LABEL_REPEATED)])
    message("SessionLog", [("status", 1, T.TYPE_INT32, None, None)])
    message("Event", [("wall_time", 1, T.TYPE_DOUBLE, None, None),
                      ("step", 2, T.TYPE_INT64, None, None),
                      ("file_version", 3, T.TYPE_STRING, None, None),
                      ("summary", 5, T.TYPE_MESSAGE, ".t.Summary", None),
                      ("session_log", 7, T.TYPE_MESSAGE, ".t.SessionLog", None)])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(f)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("t.Event"))


Event = _event_class()


def _events(logdir):
    files = sorted(logdir.glob("events.out.tfevents.*"))
    assert len(files) == 1, files
    return [Event.FromString(r) for r in _read_records(files[0])]


# --------------------------------------------------------------- tests
@pytest.mark.parametrize("data, expected", [
    (b"123456789", 0xE3069283),          # the CRC catalogue's check value for CRC-32C
    (bytes(32), 0x8A9136AA),             # RFC 3720 B.4: 32 bytes of zeros
    (b"\xff" * 32, 0x62A8AB43),          # RFC 3720 B.4: 32 bytes of ones
    (bytes(range(32)), 0x46DD794E),      # RFC 3720 B.4: incrementing bytes
])
def test_crc32c_matches_published_check_values(data, expected):
    assert crc32c(data) == expected


def test_event_file_starts_with_the_version_and_holds_the_scalars(tmp_path):
    writer = EventWriter(tmp_path)
    writer.scalars(10, {"train/loss": 0.5, "train/lr": 2e-3}, wall_time=123.5)
    writer.scalars(20, {"train/loss": 0.25})
    events = _events(tmp_path)
    assert events[0].file_version == "brain.Event:2"
    assert [e.step for e in events[1:]] == [10, 20]
    assert events[1].wall_time == 123.5
    values = {v.tag: v.simple_value for v in events[1].summary.value}
    assert values == {"train/loss": 0.5, "train/lr": pytest.approx(2e-3, rel=1e-7)}
    assert events[2].summary.value[0].simple_value == 0.25


def test_metrics_log_writes_jsonl_and_tensorboard_scalars(tmp_path):
    log = MetricsLog(tmp_path)
    log.write(5, {"loss": 1.5, "grad_norm": 3, "eval/fid": 12.0, "note": "text"})
    record = json.loads((tmp_path / "metrics.jsonl").read_text())
    assert record == {"step": 5, "loss": 1.5, "grad_norm": 3.0, "eval/fid": 12.0,
                      "note": "text"}
    (event,) = [e for e in _events(tmp_path) if e.HasField("summary")]
    assert event.step == 5
    assert {v.tag: v.simple_value for v in event.summary.value} == {
        "train/loss": 1.5, "train/grad_norm": 3.0, "eval/fid": 12.0}


@pytest.mark.parametrize("channels", [1, 3])
def test_write_image_stores_the_picture_as_png(tmp_path, channels):
    rng = np.random.default_rng(0)
    picture = rng.integers(0, 256, (7, 11, channels), dtype=np.uint8)
    MetricsLog(tmp_path).write_image(40, "samples", picture)
    (event,) = [e for e in _events(tmp_path) if e.HasField("summary")]
    value = event.summary.value[0]
    assert (event.step, value.tag) == (40, "samples")
    assert (value.image.height, value.image.width, value.image.colorspace) == (7, 11, channels)
    decoded = np.asarray(Image.open(io.BytesIO(value.image.encoded_image_string)))
    np.testing.assert_array_equal(decoded.reshape(picture.shape), picture)


def test_resume_marks_a_session_start_after_the_restored_step(tmp_path):
    first = MetricsLog(tmp_path)
    for step in (2, 4, 6):
        first.write(step, {"loss": float(step)})
    resumed_dir = tmp_path / "resumed"
    resumed_dir.mkdir()
    (resumed_dir / "metrics.jsonl").write_text((tmp_path / "metrics.jsonl").read_text())
    resumed = MetricsLog(resumed_dir)
    resumed.truncate_after(4)
    steps = [json.loads(x)["step"] for x in (resumed_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == [2, 4]
    start = [e for e in _events(resumed_dir) if e.HasField("session_log")]
    assert [(e.step, e.session_log.status) for e in start] == [(5, 1)]  # START hides >= 5


def test_disabled_metrics_log_writes_nothing(tmp_path):
    log = MetricsLog(tmp_path, enabled=False)
    log.write(1, {"loss": 1.0})
    log.write_image(1, "samples", np.zeros((4, 4), np.uint8))
    assert list(tmp_path.iterdir()) == []


def test_write_image_rejects_float_pixels(tmp_path):
    with pytest.raises(TypeError, match="uint8"):
        MetricsLog(tmp_path).write_image(1, "samples", np.zeros((4, 4), np.float32))


class _Stream(io.StringIO):
    def __init__(self, tty: bool):
        super().__init__()
        self.tty = tty

    def isatty(self):
        return self.tty


def test_progress_prints_one_line_per_update_when_not_a_terminal():
    stream = _Stream(tty=False)
    progress = Progress(100, 0, stream=stream)
    progress.update(50, {"loss": 0.5})
    progress.update(100, {"loss": 0.25})
    progress.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("train step 50/100 loss 0.5 ") and "ETA" in lines[0]
    assert lines[1].startswith("train step 100/100 loss 0.25 ") and lines[1].endswith("ETA 0s")


def test_progress_draws_a_bar_in_a_terminal(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    stream = _Stream(tty=True)
    progress = Progress(100, 0, stream=stream)
    progress.update(50, {"loss": 0.5})
    progress.close()
    text = stream.getvalue()
    assert "\r" in text and "50/100" in text and "loss=" not in text.split("\r")[0]
    assert "train step 50/100" not in text  # the bar, not the line format
