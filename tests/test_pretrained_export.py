"""`jaxdiff.pretrained.export`: a jaxdiff run as a diffusers DDPMPipeline folder, checked by
loading it with diffusers and comparing the UNet outputs with jaxdiff's."""

import dataclasses
import json

import jax
import numpy as np
import pytest
from helpers import tiny_config

from jaxdiff import checkpoint as ckpt_lib
from jaxdiff import training
from jaxdiff.models import apply_model
from jaxdiff.pretrained import load_component
from jaxdiff.pretrained.export import export_run
from jaxdiff.validation import InputError

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")


def perturbed_run(workdir, preset="digits"):
    """A run whose EMA parameters are the initial ones plus noise (biases and norm scales no
    longer 0 and 1, so that a wrong mapping of any of them shows)."""
    config = tiny_config(preset)
    graphdef, _, state = training.init_train_state(config)
    leaves, tree = jax.tree.flatten(state.ema_params)
    rng = np.random.default_rng(7)
    noisy = [np.asarray(v) + 0.1 * rng.standard_normal(v.shape).astype(np.float32)
             for v in leaves]
    state = dataclasses.replace(state, ema_params=jax.tree.unflatten(tree, noisy))
    ckpt_lib.save_config(workdir, config)
    checkpointer = ckpt_lib.Checkpointer(workdir)
    checkpointer.save(0, state, {"step": 0, "data_iterator": {}, "config": config.to_dict()})
    checkpointer.close()
    return config, graphdef, jax.tree.unflatten(tree, noisy)


def diffusers_unet_output(folder, x, t, labels=None):
    model = diffusers.UNet2DModel.from_pretrained(folder / "unet").eval()
    with torch.no_grad():
        out = model(torch.from_numpy(x.transpose(0, 3, 1, 2)), torch.from_numpy(t),
                    class_labels=None if labels is None else torch.from_numpy(labels)).sample
    return out.numpy().transpose(0, 2, 3, 1)


@pytest.mark.parametrize("preset", ["digits", "digits_cond"])
def test_exported_unet_in_diffusers_equals_jaxdiff(tmp_path, preset):
    config, graphdef, params = perturbed_run(tmp_path / "run", preset)
    out = export_run(tmp_path / "run", tmp_path / "exported")
    rng = np.random.default_rng(1)
    size, channels = config.model.image_size, config.model.in_channels
    x = rng.standard_normal((2, size, size, channels)).astype(np.float32)
    t = np.array([5, 900], np.int64)
    labels = np.array([3, config.model.num_classes], np.int64) if preset == "digits_cond" else None
    ours = apply_model(graphdef, params, x, t.astype(np.int32),
                       None if labels is None else labels.astype(np.int32))
    np.testing.assert_allclose(diffusers_unet_output(out, x, t, labels), np.asarray(ours),
                               atol=2e-5, rtol=0)


def test_export_loads_back_into_the_same_params(tmp_path):
    _, _, params = perturbed_run(tmp_path / "run")
    loaded = load_component(export_run(tmp_path / "run", tmp_path / "exported") / "unet")
    jax.tree.map(np.testing.assert_array_equal, loaded.params, params)


def test_ddpm_pipeline_runs_the_export_with_the_runs_schedule(tmp_path):
    config, _, _ = perturbed_run(tmp_path / "run")
    out = export_run(tmp_path / "run", tmp_path / "exported")
    pipeline = diffusers.DDPMPipeline.from_pretrained(out)
    scheduler = json.loads((out / "scheduler" / "scheduler_config.json").read_text())
    assert scheduler["prediction_type"] == config.diffusion.prediction_type
    betas = np.asarray(training.schedule_from_config(config).betas)
    np.testing.assert_allclose(pipeline.scheduler.betas.numpy(), betas, rtol=1e-6)
    images = pipeline(batch_size=2, num_inference_steps=3, output_type="np",
                      generator=torch.Generator().manual_seed(0)).images
    size = config.model.image_size
    assert images.shape == (2, size, size, config.model.in_channels)
    assert np.all(np.isfinite(images))


def test_export_never_writes_into_a_non_empty_folder(tmp_path):
    perturbed_run(tmp_path / "run")
    out = tmp_path / "exported"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match="not empty"):
        export_run(tmp_path / "run", out)
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".exported")]


def test_export_refuses_heads_diffusers_cannot_express():
    from jaxdiff.pretrained.pixel_unet import config_from_unet_kwargs

    kwargs = {"image_size": 16, "base_channels": 8, "channel_mults": (1, 2),
              "attention_resolutions": (16, 8), "num_heads": 2, "num_groups": 4}
    with pytest.raises(InputError, match="one head size"):
        config_from_unet_kwargs(kwargs)
    assert config_from_unet_kwargs(dict(kwargs, num_heads=1))["attention_head_dim"] is None
