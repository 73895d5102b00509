"""`jaxdiff sample --pretrained` and `jaxdiff export`, and bad pipeline folders: each refused by
the API with an InputError and by the CLI with exit 2 and one paragraph (no traceback)."""

import json
import shutil

import numpy as np
import pytest
from sd_parity_helpers import perturb_

from jaxdiff.cli import main
from jaxdiff.pretrained import WeightsError, load_component
from jaxdiff.pretrained.pipeline import load_pipeline
from jaxdiff.pretrained.pixel_sampling import load_pixel_pipeline
from jaxdiff.validation import InputError

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

UNET = {"sample_size": 8, "in_channels": 3, "out_channels": 3, "block_out_channels": (8, 16),
        "layers_per_block": 1, "norm_num_groups": 4, "attention_head_dim": None,
        "down_block_types": ("DownBlock2D", "AttnDownBlock2D"),
        "up_block_types": ("AttnUpBlock2D", "UpBlock2D"), "flip_sin_to_cos": False,
        "freq_shift": 1, "downsample_padding": 0, "norm_eps": 1e-6}
WEIGHTS = "diffusion_pytorch_model.safetensors"


@pytest.fixture(scope="module")
def pipeline_folder(tmp_path_factory):
    """A tiny DDPMPipeline with a DDIM scheduler (clip_sample, leading spacing, steps_offset 1)."""
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(**UNET).eval()
    perturb_(unet, 1, scale=0.1)
    scheduler = diffusers.DDIMScheduler(beta_schedule="linear", clip_sample=True, steps_offset=1)
    folder = tmp_path_factory.mktemp("pixel") / "ddpm"
    diffusers.DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(folder)
    (folder / "safety_checker").mkdir()  # untidy: a component jaxdiff ignores
    (folder / "safety_checker" / "model.bin").write_bytes(b"not read")
    return folder, unet, scheduler


def run_cli(argv, capsys):
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    return code, err


def test_sample_pretrained_with_latents_equals_the_diffusers_ddim_loop(pipeline_folder, tmp_path,
                                                                       capsys):
    folder, unet, scheduler = pipeline_folder
    latents = np.random.default_rng(0).standard_normal((2, 8, 8, 3)).astype(np.float32)
    np.save(tmp_path / "x_T.npy", latents)
    code, err = run_cli(["sample", "--pretrained", folder, "--latents", tmp_path / "x_T.npy",
                         "--num", 2, "--steps", 4, "--out", tmp_path / "grid.png",
                         "--npz", tmp_path / "out.npz"], capsys)
    assert code == 0, err
    ours = np.load(tmp_path / "out.npz")["images"]
    scheduler.set_timesteps(4)
    x = torch.from_numpy(latents.transpose(0, 3, 1, 2))
    with torch.no_grad():
        for t in scheduler.timesteps:
            x = scheduler.step(unet(x, t).sample, t, x, eta=0.0).prev_sample
    np.testing.assert_allclose(ours, x.numpy().transpose(0, 2, 3, 1), atol=1e-4, rtol=0)


def test_load_pipeline_ignores_unused_components(pipeline_folder):
    loaded = load_pipeline(pipeline_folder[0])
    assert sorted(loaded.components) == ["unet"]
    assert loaded.scheduler_config["_class_name"] == "DDIMScheduler"


def test_export_command_writes_a_folder_diffusers_loads(tmp_path, capsys):
    from untrained_run import make_untrained_run

    run = make_untrained_run(tmp_path / "run", "digits")
    code, err = run_cli(["export", "--workdir", run, "--out", tmp_path / "out"], capsys)
    assert code == 0, err
    unet = diffusers.UNet2DModel.from_pretrained(tmp_path / "out" / "unet")
    assert unet.config.sample_size == 16
    code, err = run_cli(["export", "--workdir", run, "--out", tmp_path / "out"], capsys)
    assert code == 2 and "not empty" in err and "Traceback" not in err


def _split_into_shards(unet_dir):
    from safetensors.numpy import load_file, save_file

    tensors = load_file(str(unet_dir / WEIGHTS))
    names = sorted(tensors)
    weight_map = {}
    for i, part in enumerate((names[::2], names[1::2])):
        shard = f"diffusion_pytorch_model-0000{i + 1}-of-00002.safetensors"
        save_file({n: tensors[n] for n in part}, str(unet_dir / shard))
        weight_map.update(dict.fromkeys(part, shard))
    (unet_dir / f"{WEIGHTS}.index.json").write_text(json.dumps({"weight_map": weight_map}))
    (unet_dir / WEIGHTS).unlink()


def test_sharded_weights_load_the_same_params(pipeline_folder, tmp_path):
    import jax

    unet_dir = tmp_path / "unet"
    shutil.copytree(pipeline_folder[0] / "unet", unet_dir)
    _split_into_shards(unet_dir)
    jax.tree.map(np.testing.assert_array_equal, load_component(unet_dir).params,
                 load_component(pipeline_folder[0] / "unet").params)


def test_variant_is_picked_when_asked(pipeline_folder, tmp_path):
    import jax

    unet_dir = tmp_path / "unet"
    shutil.copytree(pipeline_folder[0] / "unet", unet_dir)
    plain = load_component(unet_dir).params
    (unet_dir / WEIGHTS).rename(unet_dir / "diffusion_pytorch_model.fp16.safetensors")
    with pytest.raises(WeightsError, match=r"only variant weights \['fp16'\]"):
        load_component(unet_dir)
    with pytest.raises(WeightsError, match=r"no 'ema' variant .* \['fp16'\]"):
        load_component(unet_dir, variant="ema")
    jax.tree.map(np.testing.assert_array_equal, load_component(unet_dir, variant="fp16").params,
                 plain)


def _edit_config(folder, **changes):
    path = folder / "unet" / "config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


def _truncate(folder):
    path = folder / "unet" / WEIGHTS
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def _pickle_only(folder):
    (folder / "unet" / WEIGHTS).unlink()
    (folder / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"pickle")


def _missing_shard(folder):
    _split_into_shards(folder / "unet")
    (folder / "unet" / "diffusion_pytorch_model-00002-of-00002.safetensors").unlink()


BREAKAGES = {
    "missing_component": (lambda f: shutil.rmtree(f / "unet"),
                          "missing the component folder(s) unet/"),
    "wrong_config_key": (lambda f: _edit_config(f, layer_per_block=1),
                         "unknown key(s) ['layer_per_block']"),
    "shape_mismatch": (lambda f: _edit_config(f, in_channels=1),
                       "mis-shaped tensors: conv_in.weight (8, 3, 3, 3)"),
    "truncated_safetensors": (_truncate, "damaged or truncated"),
    "pickle_only": (_pickle_only, "save_pretrained(folder, safe_serialization=True)"),
    "missing_shard": (_missing_shard, "names the shard"),
    "no_model_index": (lambda f: (f / "model_index.json").unlink(), "no model_index.json"),
    "unsupported_scheduler_setting": (
        lambda f: (f / "scheduler" / "scheduler_config.json").write_text(json.dumps(
            {"_class_name": "DDIMScheduler", "timestep_spacing": "karras"})),
        "timestep_spacing='karras'"),
}


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_bad_folders_are_refused_by_the_api_and_the_cli(breakage, pipeline_folder, tmp_path,
                                                        capsys):
    folder = tmp_path / "broken"
    shutil.copytree(pipeline_folder[0], folder)
    damage, fragment = BREAKAGES[breakage]
    damage(folder)
    with pytest.raises(InputError) as info:
        load_pixel_pipeline(folder)
    assert fragment in str(info.value)
    code, err = run_cli(["sample", "--pretrained", folder, "--num", 1, "--steps", 2,
                         "--out", tmp_path / "x.png"], capsys)
    assert code == 2
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert err.startswith("jaxdiff sample: error:") and fragment in err
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("latents,fragment", [
    (np.zeros((2, 8, 8, 3), np.float64), "must be float32"),
    (np.zeros((2, 3, 8, 8), np.float32), "NHWC"),
    (np.zeros((3, 8, 8, 3), np.float32), "(2, 8, 8, 3)"),
    (np.full((2, 8, 8, 3), np.nan, np.float32), "non-finite"),
])
def test_bad_latents_are_refused_before_sampling(latents, fragment, pipeline_folder, tmp_path,
                                                 capsys):
    np.save(tmp_path / "x_T.npy", latents)
    code, err = run_cli(["sample", "--pretrained", pipeline_folder[0], "--num", 2,
                         "--latents", tmp_path / "x_T.npy", "--out", tmp_path / "x.png"], capsys)
    assert code == 2 and fragment in err and "Traceback" not in err


def test_sample_workdir_latents_start_every_image_from_its_row(tmp_path, capsys):
    """Image i starts from latents[i] whatever the batch size (the last batch is padded), and
    the latents are what is sampled: a different x_T gives different images. Deterministic DDIM
    (eta 0), so that only x_T differs between the calls."""
    from untrained_run import make_untrained_run

    run = make_untrained_run(tmp_path / "run", "digits")
    latents = np.random.default_rng(0).standard_normal((3, 16, 16, 1)).astype(np.float32)
    np.save(tmp_path / "x_T.npy", latents)
    results = []
    for batch, name in ((3, "a"), (2, "b")):
        code, err = run_cli(["sample", "--workdir", run, "--latents", tmp_path / "x_T.npy",
                             "--num", 3, "--steps", 2, "--method", "ddim", "--eta", 0, "--batch", batch,
                             "--out", tmp_path / f"{name}.png", "--npz", tmp_path / f"{name}.npz"],
                            capsys)
        assert code == 0, err
        results.append(np.load(tmp_path / f"{name}.npz")["images"])
    # other batch sizes may take other float32 conv algorithms: equal to float32 rounding
    np.testing.assert_allclose(results[0], results[1], atol=1e-3, rtol=0)
    code, err = run_cli(["sample", "--workdir", run, "--num", 3, "--steps", 2, "--method", "ddim",
                         "--eta", 0, "--out", tmp_path / "c.png", "--npz", tmp_path / "c.npz"],
                        capsys)
    assert code == 0, err
    assert np.abs(np.load(tmp_path / "c.npz")["images"] - results[0]).max() > 0.1


def test_sample_pretrained_bfloat16_is_close_to_float32(pipeline_folder, tmp_path, capsys):
    latents = np.random.default_rng(1).standard_normal((1, 8, 8, 3)).astype(np.float32)
    np.save(tmp_path / "x_T.npy", latents)
    images = []
    for dtype in ("float32", "bfloat16"):
        code, err = run_cli(["sample", "--pretrained", pipeline_folder[0], "--num", 1,
                             "--steps", 2, "--latents", tmp_path / "x_T.npy", "--dtype", dtype,
                             "--out", tmp_path / f"{dtype}.png",
                             "--npz", tmp_path / f"{dtype}.npz"], capsys)
        assert code == 0, err
        images.append(np.load(tmp_path / f"{dtype}.npz")["images"])
    # bfloat16 keeps ~3 significant digits; this random tiny UNet amplifies them to ~0.1 after
    # two steps, while wrong weights or a float32 run would give O(1) or 0
    difference = np.abs(images[0] - images[1]).max()
    assert 0 < difference < 0.3 * np.abs(images[0]).max()
