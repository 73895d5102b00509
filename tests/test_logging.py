"""Run logs: a disabled metrics log, and the progress display (a bar in a terminal, one line per
interval otherwise). TensorBoard files and metrics.jsonl: tests/test_tensorboard.py."""

import io

import numpy as np

from jaxdiff.metrics_log import MetricsLog
from jaxdiff.progress import Progress


def test_disabled_metrics_log_writes_nothing(tmp_path):
    log = MetricsLog(tmp_path, enabled=False)
    log.write(1, {"loss": 1.0})
    log.write_image(1, "samples", np.zeros((4, 4), np.uint8))
    assert list(tmp_path.iterdir()) == []


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
