"""Sharded training: simulated multi-device meshes match one device (two real processes:
test_multiprocess_cli.py)."""

import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
from helpers import tiny_config

from jaxdiff import checkpoint, parallel, training
from jaxdiff.checkpoint_integrity import block_digest

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


@pytest.fixture(scope="module")
def fsdp_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("fsdp")
    finish(run_worker("fsdp", out, 5, devices=4))
    return out


def test_data_parallel_train_step_matches_single_device(single, tmp_path):
    finish(run_worker("data4", tmp_path, 5, devices=4))
    assert_params_close(load(tmp_path / "params_data4.npz"), single, atol=1e-6)


def test_fsdp_train_step_matches_single_device(single, fsdp_dir):
    assert_params_close(load(fsdp_dir / "params_fsdp.npz"), single, atol=1e-6)


def _restore_fsdp_checkpoint(workdir):
    config = tiny_config(num_steps=5)
    _, _, fresh = training.init_train_state(config)
    with checkpoint.Checkpointer(workdir) as ckpt:
        return ckpt.restore(checkpoint.abstract_like(fresh))


def _split_leaves(record_file):
    record = json.loads(record_file.read_text())
    return {leaf: blocks for leaf, blocks in record.items() if len(blocks) > 1}


def test_checksums_of_a_split_state_cover_each_shard_and_verify_in_another_layout(fsdp_dir):
    record_file = fsdp_dir / "run" / "checkpoints" / "5" / "integrity" / "sha256.process_0.json"
    split = _split_leaves(record_file)
    assert split, "no array of the fsdp state was recorded shard by shard"
    restored, meta = _restore_fsdp_checkpoint(fsdp_dir / "run")  # one device here
    assert meta["step"] == 5
    leaf, blocks = next(iter(split.items()))
    values = {jax.tree_util.keystr(p): x
              for p, x in jax.tree_util.tree_leaves_with_path(restored)}[leaf]
    for key, digest in blocks.items():  # each block is the slice of the whole array it names
        index = tuple(slice(*map(int, part.split(":"))) for part in key.split(","))
        assert block_digest(np.asarray(values)[index]) == digest


def test_a_shard_checksum_that_differs_is_reported(fsdp_dir, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(fsdp_dir / "run", workdir)
    record_file = workdir / "checkpoints" / "5" / "integrity" / "sha256.process_0.json"
    record = json.loads(record_file.read_text())
    leaf, blocks = next(iter(_split_leaves(record_file).items()))
    record[leaf][max(blocks)] = "0" * 64
    record_file.write_text(json.dumps(record))
    with pytest.raises(checkpoint.CheckpointError, match=r"step 5 .*is corrupt: 1 array"):
        _restore_fsdp_checkpoint(workdir)


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
