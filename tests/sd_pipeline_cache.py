"""Tiny random Stable Diffusion folders (tests/fixtures/tiny_sd_pipeline.py), built once per test
process and shared by the text-to-image tests."""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

_ROOT = Path(tempfile.mkdtemp(prefix="jaxdiff-tests-sd-"))


@functools.cache
def tiny_pipeline(style: str = "sd1") -> Path:
    """sd1: an SD 1.x-like folder (PNDM scheduler file as SD 1.5's, epsilon);
    sd2: an SD 2.x-768-like folder (DDIM scheduler file as SD 2.1's, v_prediction, linear
    projections, pad token "!")."""
    from fixtures.tiny_sd_pipeline import make_tiny_sd_pipeline

    if style == "sd1":
        return make_tiny_sd_pipeline(_ROOT / "sd1")
    return make_tiny_sd_pipeline(_ROOT / "sd2", style="sd2", scheduler="ddim",
                                 prediction_type="v_prediction")
