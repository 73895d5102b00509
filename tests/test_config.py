"""Config presets, --config.<key>=<value> overrides, validation and resume compatibility."""

import pytest

from jaxdiff.checkpoint import config_differences
from jaxdiff.config_overrides import apply_overrides, split_override_args
from jaxdiff.configs import get_config
from jaxdiff.validate_config import validate_config


def test_design_keys_exist_in_default_preset():
    flat = get_config("digits")
    for key in ["data.name", "data.data_dir", "data.image_size", "train.batch_size",
                "train.num_steps", "train.seed", "train.log_every", "checkpoint.every_steps",
                "checkpoint.max_to_keep", "diffusion.schedule", "diffusion.num_timesteps",
                "diffusion.prediction_type", "sampling.method", "sampling.num_steps", "mesh.data",
                "mesh.fsdp"]:
        section, name = key.split(".")
        assert name in flat[section], key


def test_overrides_are_parsed_with_the_type_of_the_current_value():
    rest, overrides = split_override_args(
        ["train", "--workdir", "w", "--config.train.num_steps=12", "--config.optim.learning_rate",
         "1e-3", "--config.model.channel_mults=1,2", "--config.data.random_flip=true",
         "--config.data.data_dir=/tmp/x", "--config.diffusion.schedule=cosine"])
    assert rest == ["train", "--workdir", "w"]
    config = apply_overrides(get_config(), overrides)
    assert config.train.num_steps == 12 and isinstance(config.train.num_steps, int)
    assert config.optim.learning_rate == 1e-3
    assert config.model.channel_mults == (1, 2)
    assert config.data.random_flip is True
    assert config.data.data_dir == "/tmp/x"
    assert config.diffusion.schedule == "cosine"


def test_data_image_size_override_reaches_the_model():
    config = apply_overrides(get_config(), {"data.image_size": "32"})
    assert config.model.image_size == 32


@pytest.mark.parametrize("overrides, match", [
    ({"train.num_stepz": "3"}, r"unknown config key 'train.num_stepz'.*num_steps"),
    ({"nope.x": "3"}, "config has no 'nope'"),
    ({"train.num_steps": "many"}, r"bad value for --config.train.num_steps: 'many'"),
    ({"train.num_steps": "2.5"}, "expected an integer"),
    ({"data.random_flip": "maybe"}, "expected true or false"),
])
def test_bad_overrides_raise(overrides, match):
    with pytest.raises(ValueError, match=match):
        apply_overrides(get_config(), overrides)


@pytest.mark.parametrize("key, value, match", [
    ("diffusion.schedule", "quadratic", "unknown diffusion.schedule 'quadratic'"),
    ("diffusion.prediction_type", "score", "unknown diffusion.prediction_type 'score'"),
    ("sampling.method", "plms", "unknown sampling.method 'plms'"),
    ("train.num_steps", 0, "train.num_steps must be an integer >= 1"),
    ("sampling.num_steps", 1001, r"sampling.num_steps must be in \[1, diffusion.num_timesteps"),
    ("mesh.data", 3, r"mesh.data=3 x mesh.fsdp=1 = 3 must equal the number of devices \(1\)"),
])
def test_validate_config_rejects(key, value, match):
    config = get_config()
    section, name = key.split(".")
    config[section][name] = value
    with pytest.raises(ValueError, match=match):
        validate_config(config)


def test_resume_differences_ignore_harmless_keys():
    saved = get_config()
    requested = get_config()
    requested.train.num_steps = 99999
    requested.train.log_every = 7
    requested.checkpoint.every_steps = 3
    requested.sampling.method = "ddpm"
    assert config_differences(saved, requested) == {}
    requested.model.base_channels = 64
    requested.data.image_size = 32
    diffs = config_differences(saved, requested)
    assert diffs["model.base_channels"] == (16, 64)
    assert diffs["data.image_size"] == (16, 32) and diffs["model.image_size"] == (16, 32)


def test_cifar10_preset_is_the_ddpm_papers_35_7m_unet():
    import jax

    from jaxdiff.models import count_params, init_model

    config = get_config("cifar10")
    params = jax.eval_shape(lambda key: init_model(dict(config.model), key)[1],
                            jax.random.key(0))
    assert abs(count_params(params) - 35.7e6) < 0.1e6
    assert config.model.channel_mults == (1, 2, 2, 2) and config.model.dropout == 0.1
    assert config.model.attention_resolutions == (16,) and config.train.batch_size == 128


@pytest.mark.parametrize("name", ["digits", "digits_cond", "cifar10", "celeba64"])
def test_every_preset_validates(name):
    validate_config(get_config(name))


@pytest.mark.parametrize("name", ["digits", "digits_cond", "cifar10", "celeba64"])
def test_every_preset_records_its_name_and_is_locked(name):
    config = get_config(name)
    assert config.preset == name
    with pytest.raises(AttributeError, match="num_stepz"):
        config.train.num_stepz = 3  # a typo is never a new, silently ignored key
    config.train.num_steps = 3  # existing keys stay overridable


def _saved_config_dict(name: str) -> dict:
    import json

    return json.loads(get_config(name).to_json())


def test_old_config_json_is_completed_from_the_digits_preset_with_a_note(tmp_path, capsys):
    import json

    from jaxdiff.checkpoint import load_config

    saved = _saved_config_dict("digits")
    del saved["preset"]  # older versions recorded no preset: "digits" is assumed
    del saved["sampling"]["spacing"], saved["train"]["sample_every"]
    saved["train"]["debug_nan_steps"] = []  # a key this version no longer has
    saved["train"]["num_steps"] = 77
    (tmp_path / "config.json").write_text(json.dumps(saved))
    config = load_config(tmp_path)
    note = capsys.readouterr().err
    assert config.sampling.spacing == "trailing" and config.train.sample_every == 0
    assert config.train.num_steps == 77  # saved values win
    assert "debug_nan_steps" not in config.train
    assert "sampling.spacing" in note and "train.sample_every" in note and "'digits'" in note
    assert "train.debug_nan_steps" in note
    with pytest.raises(AttributeError):
        config.train.num_stepz = 1  # the completed config is locked like a preset


def test_a_saved_config_is_completed_from_the_preset_it_records(tmp_path, capsys):
    import json

    from jaxdiff.checkpoint import load_config

    saved = _saved_config_dict("cifar10")
    del saved["model"]["dropout"], saved["optim"]["end_learning_rate_fraction"]
    (tmp_path / "config.json").write_text(json.dumps(saved))
    config = load_config(tmp_path)
    assert config.model.dropout == 0.1 and config.optim.end_learning_rate_fraction == 1.0
    assert "'cifar10'" in capsys.readouterr().err


def test_a_complete_saved_config_loads_silently_and_unchanged(tmp_path, capsys):
    from jaxdiff.checkpoint import flatten, load_config, save_config

    config = get_config("digits_cond")
    config.train.num_steps = 5
    save_config(tmp_path, config)
    assert flatten(load_config(tmp_path)) == flatten(config)
    assert capsys.readouterr().err == ""


def _without(config, dotted: str):
    section, name = dotted.split(".")
    with config.unlocked():
        del config[section][name]
    return config


def _generate(config):
    from jaxdiff.generate import generate_images

    generate_images(config, None, None, num=2)


def _train_step(config):
    from jaxdiff import training

    optimizer = training.make_optimizer(config.optim, config.train.num_steps)
    training.make_train_step(None, training.schedule_from_config(config), optimizer, config)


def _optimizer(config):
    from jaxdiff import training

    training.make_optimizer(config.optim, config.train.num_steps)


def _schedule(config):
    from jaxdiff import training

    training.schedule_from_config(config)


# Keys the code used to read with a default of its own (sampling.spacing's was "leading", the
# presets' "trailing"): without the key it must fail, never fall back to a second default.
@pytest.mark.parametrize("use, key", [
    (validate_config, "diffusion.loss_weighting"),
    (validate_config, "diffusion.label_dropout"),
    (validate_config, "train.sample_every"),
    (validate_config, "optim.accumulation_steps"),
    (_schedule, "diffusion.rescale_zero_terminal_snr"),
    (_optimizer, "optim.accumulation_steps"),
    (_optimizer, "optim.end_learning_rate_fraction"),
    (_train_step, "diffusion.loss_weighting"),
    (_train_step, "diffusion.label_dropout"),
    (_train_step, "model.num_classes"),
    (_generate, "sampling.spacing"),
    (_generate, "sampling.batch_size"),
    (_generate, "sampling.guidance_scale"),
])
def test_the_code_reads_each_setting_from_the_preset_without_a_default_of_its_own(use, key):
    config = _without(get_config("digits_cond"), key)
    with pytest.raises((AttributeError, KeyError), match=key.split(".")[1]):
        use(config)
