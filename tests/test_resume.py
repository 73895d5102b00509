"""Exact resume through the real CLI: a run interrupted by SIGKILL (during a step and during a
save) or SIGTERM, then continued, ends bit for bit where an uninterrupted run ends.

One workdir goes through the whole chain of interruptions (a fixture); each test checks one
observation of it against the uninterrupted reference run (`cli_runs.straight_run`).
"""

import os
import re
import signal

import pytest
from cli_runs import (
    Background,
    assert_bitwise_equal,
    checkpoint_exists,
    losses,
    partial_save_in_progress,
    restore,
    run,
    straight_run,
    tmp_checkpoint,
)

from jaxdiff import checkpoint as ckpt_lib
from jaxdiff.trainer import _StopRequest, check_resume_compatible


def _steps(workdir):
    return sorted(int(n) for n in os.listdir(workdir / "checkpoints") if n.isdigit())


@pytest.fixture(scope="module")
def reference():
    return straight_run()


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory, reference):
    """Trains the reference run's 40 steps in four processes:
    1. SIGKILL while training after the step-10 save;
    2. resumed, SIGKILL while orbax writes step 20 (its temporary folder holds array files);
    3. resumed, SIGTERM after the step-20 save (saves the current step, exits 143);
    4. resumed to the end."""
    workdir = tmp_path_factory.mktemp("interrupted") / "run"
    seen = {}
    slow = {"JAXDIFF_FAULT_STEP_SLEEP": "0.02"}

    first = Background(workdir, environment=slow)
    first.wait_until(checkpoint_exists(workdir, 10))
    seen["sigkill_rc"] = first.signal(signal.SIGKILL)
    seen["steps_after_sigkill"] = _steps(workdir)

    second = Background(workdir, environment=slow)
    second.wait_until(lambda: partial_save_in_progress(workdir))
    seen["tmp_folder"] = tmp_checkpoint(workdir)
    seen["save_kill_rc"] = second.signal(signal.SIGKILL)
    seen["steps_after_save_kill"] = _steps(workdir)
    seen["second_stderr"] = second.stderr

    third = Background(workdir, environment={"JAXDIFF_FAULT_STEP_SLEEP": "0.05"})
    third.wait_until(checkpoint_exists(workdir, 20))
    seen["sigterm_rc"] = third.signal(signal.SIGTERM)
    seen["sigterm_stderr"] = third.stderr
    seen["tmp_after_restart"] = tmp_checkpoint(workdir)
    seen["steps_after_sigterm"] = _steps(workdir)

    last = run("train", workdir)
    assert last.returncode == 0, last.stderr[-3000:]
    seen["last_stderr"] = last.stderr
    return workdir, seen


def test_sigkill_mid_training_keeps_the_last_committed_checkpoint(interrupted):
    _, seen = interrupted
    assert seen["sigkill_rc"] == -signal.SIGKILL
    assert seen["steps_after_sigkill"][-1] >= 10 and seen["steps_after_sigkill"][-1] < 40


def test_resume_starts_from_the_latest_checkpoint(interrupted):
    _, seen = interrupted
    assert f"resuming from step {seen['steps_after_sigkill'][-1]}" in seen["second_stderr"]


def test_sigkill_during_a_save_leaves_only_an_unlisted_temporary_folder(interrupted):
    _, seen = interrupted
    assert seen["save_kill_rc"] == -signal.SIGKILL
    assert seen["tmp_folder"] is not None and seen["tmp_folder"].startswith("20.")
    assert 20 not in seen["steps_after_save_kill"]  # the partial step is never a checkpoint
    assert seen["tmp_after_restart"] is None  # removed when the next run opened the workdir


def test_sigterm_saves_the_current_step_and_exits_143_with_a_message(interrupted):
    _workdir, seen = interrupted
    assert seen["sigterm_rc"] == 128 + signal.SIGTERM
    match = re.search(r"received SIGTERM: saved a checkpoint at step (\d+)", seen["sigterm_stderr"])
    assert match, seen["sigterm_stderr"][-2000:]
    step = int(match.group(1))
    assert 20 <= step < 40 and step in seen["steps_after_sigterm"]
    assert "run the same command to continue" in seen["sigterm_stderr"]
    assert "Traceback" not in seen["sigterm_stderr"]


def test_interrupted_run_ends_with_bitwise_identical_checkpoints(interrupted, reference):
    workdir, _ = interrupted
    common = sorted(set(_steps(workdir)) & set(_steps(reference)))
    assert common == [10, 20, 30, 40]
    for step in common:
        (state, meta), (expected, expected_meta) = restore(workdir, step), restore(reference, step)
        assert_bitwise_equal(state, expected)
        assert meta["data_iterator"] == expected_meta["data_iterator"]


def test_interrupted_run_logs_the_same_losses(interrupted, reference):
    workdir, _ = interrupted
    logged = losses(workdir)
    assert [s for s, _ in logged] == list(range(1, 41))  # each step once, in order
    assert logged == losses(reference)


def test_resume_with_a_different_model_is_refused_naming_the_keys(reference):
    result = run("train", reference, "--config.model.base_channels=16",
                 "--config.diffusion.schedule=linear")
    assert result.returncode == 2, result.stderr[-2000:]
    assert "model.base_channels: saved 8, requested 16" in result.stderr
    assert "diffusion.schedule: saved 'cosine', requested 'linear'" in result.stderr
    assert "Traceback" not in result.stderr


def test_harmless_keys_may_change_on_resume(reference):
    config = ckpt_lib.load_config(reference)
    config.train.num_steps = 80
    config.train.log_every = 7
    config.checkpoint.every_steps = 5
    config.sampling.method = "ddpm"
    check_resume_compatible(reference, config)  # no error


def test_data_shape_change_is_refused(reference):
    config = ckpt_lib.load_config(reference)
    config.train.batch_size = 16
    with pytest.raises(ValueError, match=r"train.batch_size: saved 8, requested 16"):
        check_resume_compatible(reference, config)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_becomes_a_stop_request(signum):
    with _StopRequest() as stop:
        assert stop.signal_name is None
        os.kill(os.getpid(), signum)
        assert stop.signal_name == signal.Signals(signum).name
    assert signal.getsignal(signum) is not stop._handle  # the previous handler is back
