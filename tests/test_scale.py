"""Sharded training: simulated multi-device meshes and two real processes match one device."""

import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest
from helpers import tiny_config

from jaxdiff import checkpoint, parallel, training

WORKER = os.path.join(os.path.dirname(__file__), "scale_worker.py")


def run_worker(mode, out_dir, steps, devices=1, extra_env=None):
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    env.update(extra_env or {})
    return subprocess.Popen([sys.executable, WORKER, mode, str(out_dir), str(steps)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc, timeout=600):
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]


def load(path):
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def split_key_bias(params):
    """Moves the attention key bias out of the comparison set.

    Softmax is invariant to adding a constant to every key, so the key bias has an exactly zero
    gradient: what it receives is float rounding noise (~1e-10), which Adam normalises to
    learning-rate-sized steps. Any change in summation order (sharding!) changes that noise, so
    those entries are only bounded by Adam's step size; every other parameter must agree to atol.
    """
    out, key_bias = {}, {}
    for name, value in params.items():
        if name.endswith("['qkv']['bias']"):
            q, k, v = np.split(value, 3)
            out[name] = np.concatenate([q, v])
            key_bias[name] = k
        else:
            out[name] = value
    return out, key_bias


def assert_params_close(a, b, atol, adam_bound=5 * 5 * 2e-3):
    assert a.keys() == b.keys()
    (a, a_k), (b, b_k) = split_key_bias(a), split_key_bias(b)
    worst = max(float(np.max(np.abs(a[k] - b[k]))) for k in a)
    assert worst <= atol, f"max abs difference {worst}"
    for k in a_k:
        assert float(np.max(np.abs(a_k[k] - b_k[k]))) <= max(adam_bound, atol)


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    out = tmp_path_factory.mktemp("single")
    finish(run_worker("single", out, 5))
    return load(out / "params_single.npz")


@pytest.mark.parametrize("mode", ["data4", "fsdp"])
def test_sharded_train_step_matches_single_device(single, mode, tmp_path):
    finish(run_worker(mode, tmp_path, 5, devices=4))
    assert_params_close(load(tmp_path / f"params_{mode}.npz"), single, atol=1e-6)


def test_two_processes_match_one_and_their_checkpoint_restores_in_one(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = [run_worker("multiprocess", tmp_path, 10, extra_env={
        "JAXDIFF_COORDINATOR": f"127.0.0.1:{port}", "JAXDIFF_NUM_PROCESSES": "2",
        "JAXDIFF_PROCESS_ID": str(i)}) for i in range(2)]
    for p in procs:
        finish(p)
    reference_dir = tmp_path / "ref"
    reference_dir.mkdir()
    finish(run_worker("single", reference_dir, 10))
    two = load(tmp_path / "params_multiprocess.npz")
    one = load(reference_dir / "params_single.npz")
    assert_params_close(two, one, atol=1e-6)

    # The checkpoint written collectively by both processes restores here, in one process.
    config = tiny_config(num_steps=10)
    _, _, fresh = training.init_train_state(config)
    restored, meta = checkpoint.Checkpointer(tmp_path / "run").restore(
        checkpoint.abstract_like(fresh))
    assert meta["step"] == 10 and int(restored.step) == 10
    flat = {jax.tree_util.keystr(p): np.asarray(x)
            for p, x in jax.tree_util.tree_flatten_with_path(restored.params)[0]}
    assert_params_close(flat, two, atol=0.0)


def test_gradient_accumulation_matches_one_big_batch():
    config = tiny_config(num_steps=8)
    config.train.batch_size = 16
    rng = np.random.default_rng(0)
    s = config.data.image_size
    big = {"image": rng.uniform(-1, 1, (16, s, s, 1)).astype(np.float32),
           "label": np.zeros(16, np.int32),
           "t": rng.integers(0, 1000, 16).astype(np.int32),
           "noise": rng.standard_normal((16, s, s, 1)).astype(np.float32)}

    def run(accumulation, batches):
        cfg = tiny_config(num_steps=8 * accumulation)
        cfg.optim.accumulation_steps = accumulation
        graphdef, optimizer, state = training.init_train_state(cfg, jax.random.key(0))
        step = jax.jit(training.make_train_step(graphdef, training.schedule_from_config(cfg),
                                                optimizer, cfg))
        for b in batches:
            state, _ = step(state, b)
        return state.params

    one = run(1, [big])
    micro = [{k: v[i * 4:(i + 1) * 4] for k, v in big.items()} for i in range(4)]
    four = run(4, micro)
    for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(four)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-6, rtol=1e-5)


@pytest.mark.parametrize("data, fsdp, devices, match", [
    (3, 1, 4, r"mesh.data=3 x mesh.fsdp=1 = 3 must equal the number of devices \(4\)"),
    (-1, 3, 4, r"mesh.fsdp=3 does not divide the number of devices \(4\)"),
    (-1, -1, 4, "at most one may be -1"),
    (0, 1, 4, "must be a positive size"),
])
def test_bad_mesh_is_refused(data, fsdp, devices, match):
    config = tiny_config()
    config.mesh.data, config.mesh.fsdp = data, fsdp
    with pytest.raises(ValueError, match=match):
        parallel.mesh_shape(config.mesh, devices)


def test_batch_not_divisible_by_devices_is_refused():
    with pytest.raises(ValueError, match=r"train.batch_size=10 is not divisible .* \(4\)"):
        parallel.check_global_batch(10, 4)


def test_inconsistent_process_arguments_are_refused():
    with pytest.raises(ValueError, match=r"process_id=2 must be in \[0, num_processes=2\)"):
        parallel.initialize_distributed("127.0.0.1:1234", 2, 2)
    with pytest.raises(ValueError, match="needs the coordinator address"):
        parallel.initialize_distributed(None, 2, 0)
