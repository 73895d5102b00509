"""The `jaxdiff` command end to end in subprocesses: train, sample, and errors on bad input."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

TINY = ["--config.model.base_channels=8", "--config.model.channel_mults=1,2",
        "--config.model.attention_resolutions=8",
        "--config.model.num_res_blocks=1", "--config.model.num_heads=2",
        "--config.model.num_groups=4", "--config.train.batch_size=8",
        "--config.train.log_every=2", "--config.checkpoint.every_steps=3",
        "--config.optim.warmup_steps=1", "--config.sampling.num_steps=3",
        "--config.sampling.num_samples=4"]


def jaxdiff(*args, timeout=600):
    env = dict(os.environ, CI="true", JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, "-m", "jaxdiff.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("run")
    result = jaxdiff("train", "--workdir", workdir, "--config.train.num_steps=4", *TINY,
                     "--config.train.sample_every=2")
    assert result.returncode == 0, result.stderr
    return workdir, result


def test_train_writes_checkpoints_logs_and_a_sample_grid(trained):
    workdir, result = trained
    assert sorted(os.listdir(workdir / "checkpoints")) == ["3", "4"]
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4]
    assert all(np.isfinite(r["loss"]) for r in records)
    assert "step 4/4" in result.stderr and "ETA" in result.stderr
    assert list(workdir.glob("events.out.tfevents.*")), "no TensorBoard event file"
    with Image.open(workdir / "samples.png") as image:
        image.load()
        assert image.size[0] > 16 and image.size[1] > 16


def test_sample_writes_png_and_npz_and_is_reproducible(trained, tmp_path):
    workdir, _ = trained
    outputs = []
    for name in ("a", "b"):
        result = jaxdiff("sample", "--workdir", workdir, "--num", 6, "--method", "ddim", "--steps",
                         3, "--seed", 5, "--out", tmp_path / f"{name}.png", "--npz",
                         tmp_path / f"{name}.npz")
        assert result.returncode == 0, result.stderr
        with Image.open(tmp_path / f"{name}.png") as image:
            image.load()
        outputs.append(np.load(tmp_path / f"{name}.npz")["images"])
    assert outputs[0].shape == (6, 16, 16, 1) and outputs[0].dtype == np.float32
    assert np.all(np.abs(outputs[0]) <= 1.0 + 1e-6) or np.all(np.isfinite(outputs[0]))
    np.testing.assert_array_equal(outputs[0], outputs[1])


@pytest.mark.parametrize("args, message", [
    (["--method", "plms"], "unknown sampler 'plms'"),
    (["--steps", "0"], "num_steps"),
    (["--labels", "1,2"], "unconditional"),
    (["--guidance", "3"], "class-conditional"),
    (["--out", "grid.jpg"], "must end with .png"),
])
def test_sample_bad_input_exits_2_with_a_message(trained, args, message):
    workdir, _ = trained
    result = jaxdiff("sample", "--workdir", workdir, "--num", 2, *args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr


def test_sample_from_a_folder_without_a_run(tmp_path):
    result = jaxdiff("sample", "--workdir", tmp_path / "nothing")
    assert result.returncode == 2 and "a jaxdiff workdir?" in result.stderr
    assert "Traceback" not in result.stderr


def test_resume_with_a_different_model_is_refused_and_nothing_is_overwritten(trained):
    workdir, _ = trained
    before = (workdir / "config.json").read_text()
    steps_before = sorted(os.listdir(workdir / "checkpoints"))
    result = jaxdiff("train", "--workdir", workdir, "--config.train.num_steps=6", *TINY,
                     "--config.model.base_channels=16")
    assert result.returncode == 2
    assert "model.base_channels: saved 8, requested 16" in result.stderr
    assert (workdir / "config.json").read_text() == before
    assert sorted(os.listdir(workdir / "checkpoints")) == steps_before


def test_train_with_an_unknown_config_key(tmp_path):
    result = jaxdiff("train", "--workdir", tmp_path / "w", "--config.train.num_stepz=3")
    assert result.returncode == 2 and "unknown config key 'train.num_stepz'" in result.stderr
    assert not (tmp_path / "w").exists()
