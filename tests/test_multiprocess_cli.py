"""`jaxdiff train` as two processes on localhost, started the way a user starts them (README,
"Scale"): the same model as one process with two devices, half of each batch per process, one
set of checkpoints and logs, a joint resume after both are killed, and a clear stop when one of
them dies.

Processes run on CPU with the gloo collectives; the tiny model and 4 steps keep each run short.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from cli_runs import TINY, assert_bitwise_equal, env, host_leaves, losses, metrics, restore
from test_scale import assert_params_close

ROOT = Path(__file__).resolve().parents[1]
ARGS = [*TINY, "--config.train.num_steps=4", "--config.checkpoint.every_steps=2",
        "--config.checkpoint.max_to_keep=10", "--config.train.log_every=1"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train_command(workdir) -> list[str]:
    return [sys.executable, "-m", "jaxdiff.cli", "train", "--workdir", str(workdir), *ARGS]


class Pair:
    """Two `jaxdiff train` processes of one run (process i's stderr in <workdir>.p<i>.stderr)."""

    def __init__(self, workdir, **extra_env: str):
        self.workdir = Path(workdir)
        port = _free_port()
        self.logs = [self.workdir.parent / f"{self.workdir.name}.p{i}.stderr" for i in range(2)]
        self.processes = []
        for i in range(2):
            variables = env(JAXDIFF_COORDINATOR=f"127.0.0.1:{port}", JAXDIFF_NUM_PROCESSES="2",
                            JAXDIFF_PROCESS_ID=str(i), **extra_env)
            variables["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"
            with open(self.logs[i], "w") as stderr:
                self.processes.append(subprocess.Popen(
                    _train_command(workdir), env=variables, stdout=subprocess.DEVNULL,
                    stderr=stderr))

    def stderr(self, i: int) -> str:
        return self.logs[i].read_text()

    def wait(self, timeout: float = 600) -> list[int]:
        return [p.wait(timeout=timeout) for p in self.processes]

    def wait_for_checkpoint(self, step: int, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while not (self.workdir / "checkpoints" / str(step)).is_dir():
            if any(p.poll() is not None for p in self.processes) or time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"no checkpoint {step}:\n{self.stderr(0)[-2000:]}\n"
                                     f"{self.stderr(1)[-2000:]}")
            time.sleep(0.05)

    def kill(self, *which: int) -> None:
        for i in which or range(2):
            if self.processes[i].poll() is None:
                self.processes[i].send_signal(signal.SIGKILL)
                self.processes[i].wait()


def _finish(pair: Pair) -> Pair:
    codes = pair.wait()
    assert codes == [0, 0], f"{codes}\n{pair.stderr(0)[-3000:]}\n{pair.stderr(1)[-3000:]}"
    return pair


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    return _finish(Pair(tmp_path_factory.mktemp("two") / "run"))


@pytest.fixture(scope="module")
def one_process_two_devices(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("one") / "run"
    variables = env()
    variables["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    result = subprocess.run(_train_command(workdir), env=variables, capture_output=True,
                            text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir


def test_two_processes_train_the_model_of_one_process_with_two_devices(
        two_processes, one_process_two_devices):
    # Both checkpoints restore here, in one process (the two-process one from both processes'
    # shards, checked against both processes' checksums).
    two, _ = restore(two_processes.workdir, 4)
    one, _ = restore(one_process_two_devices, 4)
    assert_params_close(host_leaves(two.params), host_leaves(one.params), atol=1e-5)
    assert_params_close(host_leaves(two.ema_params), host_leaves(one.ema_params), atol=1e-5)
    losses_two = [r["loss"] for r in metrics(two_processes.workdir)]
    losses_one = [r["loss"] for r in metrics(one_process_two_devices)]
    np.testing.assert_allclose(losses_two, losses_one, rtol=1e-5)


def test_each_of_two_processes_feeds_half_of_each_batch(two_processes):
    # Two processes that never joined would each train alone on 8 examples (and say nothing).
    for i in range(2):
        assert f"process {i} of 2: feeds 4 of the 8 examples of each batch" in \
            two_processes.stderr(i)


def test_two_processes_write_one_set_of_checkpoints_and_logs(two_processes):
    workdir = two_processes.workdir
    assert [r["step"] for r in metrics(workdir)] == [1, 2, 3, 4]
    assert sorted(os.listdir(workdir / "checkpoints")) == ["2", "4"]
    assert "train step" in two_processes.stderr(0) and "train step" not in two_processes.stderr(1)
    assert "wrote" in two_processes.stderr(0) and "wrote" not in two_processes.stderr(1)
    # Each process committed the checksums of the shards it holds.
    integrity = sorted(name for name in os.listdir(workdir / "checkpoints" / "4" / "integrity")
                       if name.endswith(".json"))
    assert integrity == ["sha256.process_0.json", "sha256.process_1.json"]


def test_two_processes_killed_together_resume_exactly(two_processes, tmp_path):
    workdir = tmp_path / "run"
    first = Pair(workdir, JAXDIFF_FAULT_STEP_SLEEP="1.0")
    first.wait_for_checkpoint(2)
    first.kill()
    assert not (workdir / "checkpoints" / "4").exists()
    second = _finish(Pair(workdir))
    assert "resuming from step 2" in second.stderr(0)
    resumed, _ = restore(workdir, 4)
    straight, _ = restore(two_processes.workdir, 4)
    assert_bitwise_equal(resumed, straight)
    assert losses(workdir) == losses(two_processes.workdir)


def test_when_one_process_dies_the_other_stops_within_120s_naming_it(tmp_path):
    pair = Pair(tmp_path / "run", JAXDIFF_FAULT_STEP_SLEEP="1.0")
    pair.wait_for_checkpoint(2)
    pair.kill(1)
    killed = time.monotonic()
    try:
        code = pair.processes[0].wait(timeout=120)
    except subprocess.TimeoutExpired:
        pair.kill()
        raise AssertionError(f"process 0 still runs 120 s after process 1 died:\n"
                             f"{pair.stderr(0)[-2000:]}") from None
    elapsed = time.monotonic() - killed
    assert code != 0
    assert "lost process 1 of the 2-process run" in pair.stderr(0), pair.stderr(0)[-2000:]
    print(f"process 0 stopped {elapsed:.1f} s after process 1 was killed")


def test_readme_shows_the_two_process_command_the_tests_run():
    readme = (ROOT / "README.md").read_text()
    command = " ".join(["jaxdiff", "train", "--workdir", "runs/two", *ARGS])
    for i in range(2):
        assert (f"JAXDIFF_COORDINATOR=127.0.0.1:8476 JAXDIFF_NUM_PROCESSES=2 "
                f"JAXDIFF_PROCESS_ID={i} {command}") in readme
