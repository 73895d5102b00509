"""Runs a few train steps under a given device mesh; used by test_scale.py in subprocesses.

usage: python scale_worker.py MODE OUT_DIR [STEPS]
  MODE "single": one device, no mesh.  "data4": mesh data=4.  "fsdp": mesh data=2, fsdp=2.
Writes OUT_DIR/params_<MODE>.npz with the flattened parameters after the steps.
"""

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff import checkpoint, parallel, training

sys.path.insert(0, os.path.dirname(__file__))
from helpers import tiny_config  # noqa: E402


def global_batches(config, steps):
    """Deterministic global batches (images, labels, t, noise) independent of the layout."""
    rng = np.random.default_rng(1234)
    b, s, c = config.train.batch_size, config.data.image_size, config.data.channels
    for _ in range(steps):
        yield {"image": rng.uniform(-1, 1, (b, s, s, c)).astype(np.float32),
               "label": rng.integers(0, 10, b).astype(np.int32),
               "t": rng.integers(0, config.diffusion.num_timesteps, b).astype(np.int32),
               "noise": rng.standard_normal((b, s, s, c)).astype(np.float32)}


def flat(params):
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in leaves}


def main():
    mode, out_dir = sys.argv[1], sys.argv[2]
    steps = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    config = tiny_config(num_steps=steps)
    config.train.batch_size = 8
    config.model.dropout = 0.0
    if mode == "single":
        graphdef, optimizer, state = training.init_train_state(config)
        step = training.make_train_step(graphdef, training.schedule_from_config(config),
                                        optimizer, config)
        step_fn = jax.jit(step)
        for batch in global_batches(config, steps):
            state, _ = step_fn(state, {k: jnp.asarray(v) for k, v in batch.items()})
    else:
        config.mesh.data, config.mesh.fsdp = {"data4": (4, 1), "fsdp": (2, 2)}[mode]
        mesh = parallel.make_mesh(config.mesh)
        graphdef, optimizer, state, shardings = training.init_sharded_train_state(config, mesh)
        step = training.make_train_step(graphdef, training.schedule_from_config(config),
                                        optimizer, config)
        data_sharding = parallel.batch_sharding(mesh)
        step_fn = training.jit_train_step(step, shardings, data_sharding)
        for batch in global_batches(config, steps):
            state, _ = step_fn(state, parallel.global_batch(batch, data_sharding))
        if mode == "fsdp":
            sharded = [x for x in jax.tree.leaves(state.params)
                       if not x.sharding.is_fully_replicated]
            assert sharded, "fsdp=2 sharded no parameter"
            # A checkpoint of the split state, for the tests of per-shard checksums.
            with checkpoint.Checkpointer(os.path.join(out_dir, "run")) as ckpt:
                ckpt.save(steps, state, {"step": steps})
    np.savez(os.path.join(out_dir, f"params_{mode}.npz"), **flat(state.params))


if __name__ == "__main__":
    main()
