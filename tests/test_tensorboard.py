"""TensorBoard event files written by jaxdiff (through tensorboardX), read back with
TensorBoard's own reader (`EventAccumulator`, which also checks every record's CRC)."""

import io
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from jaxdiff.metrics_log import MetricsLog
from jaxdiff.tensorboard import EventWriter

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")


def read_events(logdir):
    """TensorBoard's view of `logdir`: every scalar and image kept (no sampling)."""
    accumulator = event_accumulator.EventAccumulator(
        str(logdir), size_guidance={event_accumulator.SCALARS: 0, event_accumulator.IMAGES: 0})
    accumulator.Reload()
    return accumulator


def scalars(accumulator, tag):
    return [(e.step, e.value) for e in accumulator.Scalars(tag)]


def test_scalars_are_read_back_by_tensorboard(tmp_path):
    writer = EventWriter(tmp_path)
    writer.scalars(10, {"train/loss": 0.5, "train/lr": 2e-3}, wall_time=123.5)
    writer.scalars(20, {"train/loss": 0.25})
    events = read_events(tmp_path)
    assert sorted(events.Tags()["scalars"]) == ["train/loss", "train/lr"]
    assert scalars(events, "train/loss") == [(10, 0.5), (20, 0.25)]
    ((step, lr),) = scalars(events, "train/lr")
    assert step == 10 and lr == pytest.approx(2e-3, rel=1e-7)  # stored as float32
    assert events.Scalars("train/loss")[0].wall_time == 123.5


def test_metrics_log_writes_jsonl_and_tensorboard_scalars(tmp_path):
    MetricsLog(tmp_path).write(5, {"loss": 1.5, "grad_norm": 3, "eval/fid": 12.0, "note": "x"})
    record = json.loads((tmp_path / "metrics.jsonl").read_text())
    assert record == {"step": 5, "loss": 1.5, "grad_norm": 3.0, "eval/fid": 12.0, "note": "x"}
    events = read_events(tmp_path)
    assert sorted(events.Tags()["scalars"]) == ["eval/fid", "train/grad_norm", "train/loss"]
    assert scalars(events, "train/loss") == [(5, 1.5)]
    assert scalars(events, "train/grad_norm") == [(5, 3.0)]
    assert scalars(events, "eval/fid") == [(5, 12.0)]


@pytest.mark.parametrize("channels", [1, 3])
def test_pictures_are_read_back_by_tensorboard_as_png(tmp_path, channels):
    picture = np.random.default_rng(0).integers(0, 256, (7, 11, channels), dtype=np.uint8)
    MetricsLog(tmp_path).write_image(40, "samples", picture)
    (image,) = read_events(tmp_path).Images("samples")
    assert (image.step, image.height, image.width) == (40, 7, 11)
    decoded = np.asarray(Image.open(io.BytesIO(image.encoded_image_string)).convert("RGB"))
    np.testing.assert_array_equal(decoded, np.broadcast_to(picture, (7, 11, 3)))


def test_resume_hides_the_steps_logged_after_the_restored_checkpoint(tmp_path):
    """A run logged steps 2, 4, 6, was resumed from step 4 and logs 6 and 8 again: TensorBoard
    shows 2, 4 of the first process and 6, 8 of the second (the session start at step 5 purges
    the orphaned step 6)."""
    first = MetricsLog(tmp_path)
    for step in (2, 4, 6):
        first.write(step, {"loss": float(step)})
    resumed = MetricsLog(tmp_path)
    resumed.truncate_after(4)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [2, 4]
    for step in (6, 8):
        resumed.write(step, {"loss": 10.0 * step})
    assert scalars(read_events(tmp_path), "train/loss") == [(2, 2.0), (4, 4.0), (6, 60.0),
                                                            (8, 80.0)]


def test_events_written_before_a_kill_are_on_disk(tmp_path):
    """Every write is flushed: a process killed right after writing loses nothing."""
    code = ("import os, signal\n"
            "from jaxdiff.tensorboard import EventWriter\n"
            f"writer = EventWriter({str(tmp_path)!r})\n"
            "for step in range(1, 4):\n"
            "    writer.scalars(step, {'train/loss': step / 4})\n"
            "os.kill(os.getpid(), signal.SIGKILL)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120,
                            check=False)
    assert result.returncode == -9, result.stderr
    assert scalars(read_events(tmp_path), "train/loss") == [(1, 0.25), (2, 0.5), (3, 0.75)]


def test_writing_events_does_not_import_torch(tmp_path):
    code = ("import sys\n"
            "from jaxdiff.tensorboard import EventWriter\n"
            f"EventWriter({str(tmp_path)!r}).scalars(1, {{'train/loss': 1.0}})\n"
            "print('torch' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-1] == "False"
    assert scalars(read_events(tmp_path), "train/loss") == [(1, 1.0)]


def test_write_image_rejects_float_pixels(tmp_path):
    with pytest.raises(TypeError, match="uint8"):
        MetricsLog(tmp_path).write_image(1, "samples", np.zeros((4, 4), np.float32))
