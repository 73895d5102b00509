"""Bad input is reported as one paragraph with exit code 2; a bug keeps its traceback (exit 1).

jaxdiff raises its own `InputError` (a ValueError; `InputTypeError` is also a TypeError) where
user input is checked, and the CLI turns exactly those (plus checkpoint errors and early stops)
into messages.
"""

import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiff.validation import InputError, InputFileNotFoundError, InputTypeError


@pytest.mark.parametrize("error, last_line", [("TypeError('bad operand')", "TypeError: bad operand"),
                                              ("KeyError('missing')", "KeyError: 'missing'")])
def test_a_programming_error_inside_a_command_exits_1_with_its_traceback(tmp_path, error,
                                                                         last_line):
    code = ("import sys\n"
            "from jaxdiff import cli\n"
            "from jaxdiff.commands import pictures\n"
            "def broken(*args, **kwargs):\n"
            f"    raise {error}\n"
            "pictures.plot_run = broken\n"
            f"sys.exit(cli.main(['plot', '--workdir', {str(tmp_path)!r}]))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 1, result.stderr
    assert "Traceback (most recent call last)" in result.stderr
    assert ", in broken\n" in result.stderr  # the traceback reaches the failing function
    assert result.stderr.rstrip().splitlines()[-1] == last_line
    assert "jaxdiff plot: error" not in result.stderr


def test_bad_input_exits_2_with_one_paragraph_and_no_traceback(tmp_path, capsys):
    from jaxdiff.cli import main

    assert main(["noise", "--levels", "0,5000", "--out", str(tmp_path / "n.png")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("jaxdiff noise: error: noise levels must be timesteps in [0, 1000); "
                          "got [5000]")


def test_a_missing_workdir_is_an_input_error_exit_2(tmp_path, capsys):
    from jaxdiff.cli import main

    assert main(["sample", "--workdir", str(tmp_path / "nothing"), "--num", "1"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and str(tmp_path / "nothing") in err


def test_wrong_type_input_is_both_an_input_error_and_a_type_error():
    from jaxdiff import diffusion
    from jaxdiff.schedules import make_schedule

    schedule = make_schedule("linear", 10)
    x = [[[[0.0]]]]  # a list, not an array
    with pytest.raises(InputTypeError, match="must be an array") as caught:
        diffusion.q_sample(schedule, x, jnp.zeros((1,), jnp.int32), x)
    assert isinstance(caught.value, TypeError) and isinstance(caught.value, InputError)


def _bad_schedule():
    from jaxdiff.schedules import make_schedule

    make_schedule("quadratic")


def _bad_timesteps():
    from jaxdiff import diffusion
    from jaxdiff.schedules import make_schedule

    x = jnp.zeros((2, 4, 4, 1))
    diffusion.q_sample(make_schedule("linear", 10), x, jnp.array([0, 10], jnp.int32), x)


def _bad_preset():
    from jaxdiff.configs import get_config

    get_config("imagenet")


def _missing_folder(tmp_path):
    from jaxdiff.data import dataset_info

    dataset_info({"name": f"folder:{tmp_path / 'absent'}"})


def _bad_sampler():
    from jaxdiff.sampling import sample
    from jaxdiff.schedules import make_schedule

    sample(lambda x, t: x, make_schedule("linear", 10), jnp.zeros((1, 4, 4, 1)),
           method="plms", num_steps=2, prediction_type="epsilon", spacing="trailing")


def _bad_override():
    from jaxdiff.config_overrides import apply_overrides
    from jaxdiff.configs import get_config

    apply_overrides(get_config("digits"), {"train.num_stepz": "3"})


def _bad_grid():
    from jaxdiff.viz import image_grid

    image_grid(np.full((1, 4, 4, 1), np.nan, np.float32))


@pytest.mark.parametrize("check", [_bad_schedule, _bad_timesteps, _bad_preset, _bad_sampler,
                                   _bad_override, _bad_grid])
def test_api_boundaries_raise_input_errors(check):
    with pytest.raises(InputError):
        check()


def test_a_missing_image_folder_is_an_input_error_and_a_file_not_found_error(tmp_path):
    with pytest.raises(InputFileNotFoundError, match="does not exist") as caught:
        _missing_folder(tmp_path)
    assert isinstance(caught.value, FileNotFoundError)
