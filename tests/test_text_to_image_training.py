"""The two stages of text to image at tiny size: the autoencoder and the latent text-conditioned
UNet train (the loss falls), the latent model reads the prompt, a latent run resumes exactly,
and a wrong `latent.autoencoder` is refused clearly."""

import json

import jax
import numpy as np
import pytest

from jaxdiff import trainer
from jaxdiff.configs import get_config
from jaxdiff.data import shapes
from jaxdiff.validation import InputError


@pytest.fixture(scope="module")
def captioned_folder(tmp_path_factory):
    """64 shapes images as PNGs with a metadata.jsonl (the folder caption convention)."""
    from PIL import Image

    root = tmp_path_factory.mktemp("shapes_folder")
    images, records = shapes.shapes_arrays("train", 64, seed=5)
    lines = []
    for i, (image, record) in enumerate(zip(images, records)):
        Image.fromarray(image).save(root / f"{i:03d}.png")
        lines.append(json.dumps({"file_name": f"{i:03d}.png", "text": record["caption"]}))
    (root / "metadata.jsonl").write_text("\n".join(lines))
    return root


def _data(config, folder):
    config.data.name = f"folder:{folder}"
    config.data.caption_key = "text"
    config.data.image_size = 16
    config.train.batch_size = 8
    config.train.log_every = 1
    return config


def _vae_config(folder, steps=12):
    config = _data(get_config("shapes_vae"), folder)
    config.model.block_out_channels = (8, 16)
    config.model.norm_num_groups = 4
    config.train.num_steps = steps
    config.checkpoint.every_steps = steps
    config.optim.learning_rate = 5e-3
    config.optim.warmup_steps = 0
    return config


def _t2i_config(folder, autoencoder, steps):
    config = _data(get_config("shapes_t2i"), folder)
    config.latent.autoencoder = str(autoencoder)
    config.model.block_out_channels = (16, 32)
    config.model.heads = 2
    config.model.cross_attention_dim = 16
    config.model.norm_num_groups = 4
    config.text_encoder.hidden_size = 16
    config.text_encoder.intermediate_size = 32
    config.text_encoder.num_hidden_layers = 1
    config.text_encoder.num_attention_heads = 2
    config.train.num_steps = steps
    config.checkpoint.every_steps = 2
    config.checkpoint.max_to_keep = 10
    config.optim.learning_rate = 3e-3
    config.optim.warmup_steps = 0
    return config


def _losses(workdir):
    return [json.loads(line)["loss"] for line in (workdir / "metrics.jsonl").read_text().splitlines()
            if line]


@pytest.fixture(scope="module")
def vae_run(captioned_folder, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("vae")
    trainer.train(_vae_config(captioned_folder), workdir, write_samples=False, verbose=False)
    return workdir


@pytest.fixture(scope="module")
def t2i_run(captioned_folder, vae_run, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("t2i")
    trainer.train(_t2i_config(captioned_folder, vae_run, 12), workdir, write_samples=False,
                  verbose=False)
    return workdir


def test_autoencoder_steps_lower_the_loss(vae_run):
    losses = _losses(vae_run)
    assert len(losses) == 12
    assert np.mean(losses[-3:]) < 0.7 * np.mean(losses[:3])


def test_text_to_image_steps_lower_the_loss(t2i_run):
    losses = _losses(t2i_run)
    assert np.mean(losses[-4:]) < 0.8 * np.mean(losses[:4])
    record = json.loads((t2i_run / "latent.json").read_text())
    assert record["autoencoder_step"] == 12 and record["scaling_factor"] > 0


def test_latent_scaling_factor_is_one_over_std_of_posterior_draws():
    from jaxdiff.tasks.latents import latent_scaling_factor

    rng = np.random.default_rng(0)
    mean = rng.normal(0.3, 2.0, (400, 4, 4, 4)).astype(np.float32)
    logvar = rng.normal(-1.0, 0.5, mean.shape).astype(np.float32)
    draws = mean[None] + np.exp(logvar / 2)[None] * rng.standard_normal((50, *mean.shape))
    np.testing.assert_allclose(latent_scaling_factor(mean, logvar), 1 / draws.std(), rtol=5e-3)


def test_latent_model_output_depends_on_the_prompt(t2i_run):
    from jaxdiff.pipelines.run_loading import load_run_text_to_image
    from jaxdiff.pipelines.text_to_image import generate

    model = load_run_text_to_image(t2i_run)
    latents = np.random.default_rng(0).standard_normal((2, 8, 8, 4)).astype(np.float32)
    images = generate(model, ["a red circle", "a blue square left of a green triangle"],
                      num_steps=2, guidance_scale=3.0, latents=latents)
    assert images.shape == (2, 16, 16, 3)
    assert np.abs(images[0] - images[1]).max() > 1e-3
    same = generate(model, ["a red circle", "a red circle"], num_steps=2, guidance_scale=3.0,
                    latents=np.concatenate([latents[:1], latents[:1]]))
    np.testing.assert_allclose(same[0], same[1], atol=1e-6)


def test_latent_run_resumes_exactly(captioned_folder, vae_run, t2i_run, tmp_path):
    import shutil

    from jaxdiff.pipelines.run_loading import load_run_text_to_image

    # continue a copy of the 12-step run from its step-6 checkpoint: steps 7..12 must replay
    workdir = tmp_path / "resumed"
    shutil.copytree(t2i_run, workdir)
    resumed = trainer.train(_t2i_config(captioned_folder, vae_run, 12), workdir, restore_step=6,
                            write_samples=False, verbose=False)
    straight = load_run_text_to_image(t2i_run).params
    for a, b in zip(jax.tree.leaves(straight["unet"]), jax.tree.leaves(resumed.ema_params["unet"])):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert _losses(workdir) == _losses(t2i_run)


def test_missing_autoencoder_path_is_a_clear_error(captioned_folder, tmp_path):
    from jaxdiff.tasks import make_task

    config = _t2i_config(captioned_folder, tmp_path / "nowhere", 2)
    with pytest.raises(FileNotFoundError, match="latent.autoencoder=.*is not a folder"):
        make_task(config, tmp_path / "run")
    config.latent.autoencoder = None
    with pytest.raises(InputError, match="latent.autoencoder is not set"):
        make_task(config, tmp_path / "run")


def test_run_that_is_not_an_autoencoder_is_refused(captioned_folder, t2i_run, tmp_path,
                                                   capsys):
    from jaxdiff.cli import main

    config = _t2i_config(captioned_folder, t2i_run, 2)
    from jaxdiff.tasks import make_task

    with pytest.raises(InputError, match="'text_to_image' run .* not an autoencoder"):
        make_task(config, tmp_path / "run")
    code = main(["train", "--config", "shapes_t2i", "--workdir", str(tmp_path / "cli"),
                 f"--config.latent.autoencoder={t2i_run}"])
    assert code == 2
    assert "not an autoencoder" in capsys.readouterr().err


def test_frozen_text_encoder_never_changes_even_with_weight_decay(captioned_folder, vae_run,
                                                                   tmp_path):
    from jaxdiff.tasks.text_to_image import init_params

    config = _t2i_config(captioned_folder, vae_run, 3)
    config.latent.train_text_encoder = False
    config.optim.weight_decay = 0.1  # AdamW's decay would shrink an encoder that is only
    #                                  stop-gradiented, not excluded from the optimizer
    state = trainer.train(config, tmp_path / "frozen", write_samples=False, verbose=False)
    _, initial = init_params(config, jax.random.split(jax.random.key(config.train.seed))[0])
    for a, b in zip(jax.tree.leaves(initial["text_encoder"]),
                    jax.tree.leaves(state.params["text_encoder"])):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    moved = [np.abs(np.asarray(a) - np.asarray(b)).max() for a, b in
             zip(jax.tree.leaves(initial["unet"]), jax.tree.leaves(state.params["unet"]))]
    assert max(moved) > 0
