"""The non-finite guard through the real CLI: NaN batches (JAXDIFF_FAULT_NAN_STEPS) are skipped
and counted; too many in a row stop the run with exit code 3 and keep the good checkpoints."""

import math

import numpy as np
import pytest
from cli_runs import host_leaves, metrics, restore, run


@pytest.fixture(scope="module")
def nan_run(tmp_path_factory):
    """The reference settings (40 steps, so the compiled step is shared with the other tests),
    NaN batches at step 5, at 9-10 (two in a row, around the step-10 save) and from 14 on
    (three in a row = the limit: the run stops)."""
    workdir = tmp_path_factory.mktemp("nan") / "run"
    result = run("train", workdir, "--config.train.max_consecutive_nonfinite=3",
                 environment={"JAXDIFF_FAULT_NAN_STEPS": "5,9,10,14,15,16,17,18"})
    return workdir, result


def test_a_nan_step_is_skipped_and_counted(nan_run):
    workdir, _ = nan_run
    records = {r["step"]: r for r in metrics(workdir)}
    assert math.isnan(records[5]["loss"]) and not math.isnan(records[6]["loss"])
    assert [records[s]["nonfinite_total"] for s in (4, 5, 6, 9, 10, 11)] == [0, 1, 1, 2, 3, 3]
    assert [records[s]["nonfinite_consecutive"] for s in (5, 6, 9, 10, 11)] == [1, 0, 1, 2, 0]


def test_too_many_nan_steps_in_a_row_stop_with_exit_3_and_a_message(nan_run):
    _, result = nan_run
    assert result.returncode == 3, result.stderr[-2000:]
    assert "3 training steps in a row had a non-finite loss or gradient" in result.stderr
    assert "The last good checkpoint is kept: steps [10]" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_kept_checkpoint_holds_finite_parameters(nan_run):
    workdir, _ = nan_run
    state, _ = restore(workdir, 10)
    assert int(state.step) == 10
    for name, values in host_leaves((state.params, state.ema_params)).items():
        assert np.all(np.isfinite(values)), name


def test_a_bad_fault_injection_step_is_refused(tmp_path):
    result = run("train", tmp_path / "run", environment={"JAXDIFF_FAULT_NAN_STEPS": "0"})
    assert result.returncode == 2
    assert "JAXDIFF_FAULT_NAN_STEPS entry must be an integer >= 1; got 0" in result.stderr
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_fault_injection_is_not_a_config_key():
    from jaxdiff.configs import PRESETS, get_config

    for name in PRESETS:
        train = get_config(name).train
        assert "debug_nan_steps" not in train and "debug_step_sleep" not in train, name


def test_the_optimizer_skips_a_non_finite_update():
    """The guard itself (no CLI): a NaN gradient leaves params and moments unchanged."""
    import jax.numpy as jnp
    from helpers import tiny_config

    from jaxdiff import training

    config = tiny_config()
    optimizer = training.make_optimizer(config.optim, config.train.num_steps)
    params = {"w": jnp.ones((3,))}
    opt_state = optimizer.init(params)
    updates, new_state = optimizer.update({"w": jnp.array([1.0, jnp.nan, 0.0])}, opt_state, params)
    assert np.all(np.asarray(updates["w"]) == 0)
    consecutive, total = training.nonfinite_counts(new_state)
    assert int(consecutive) == 1 and int(total) == 1
