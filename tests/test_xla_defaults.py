"""The XLA:CPU defaults that the CLI (not `import jaxdiff`) puts into XLA_FLAGS
(jaxdiff/xla_defaults.py)."""

import os
import subprocess
import sys

from jaxdiff import xla_defaults

FLAG = xla_defaults.CPU_FLAGS[0]
FLAG_NAME = FLAG.split("=", 1)[0]


def test_adds_the_flags_to_an_empty_environment(monkeypatch):
    monkeypatch.setattr(xla_defaults, "_backends_started", lambda: False)
    env = {}
    assert xla_defaults.apply(env) == [FLAG]
    assert env["XLA_FLAGS"] == FLAG


def test_keeps_the_users_flags_and_their_own_value(monkeypatch):
    monkeypatch.setattr(xla_defaults, "_backends_started", lambda: False)
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    xla_defaults.apply(env)
    assert env["XLA_FLAGS"] == f"--xla_force_host_platform_device_count=4 {FLAG}"
    env = {"XLA_FLAGS": f"{FLAG_NAME}=dot"}
    assert xla_defaults.apply(env) == []
    assert env["XLA_FLAGS"] == f"{FLAG_NAME}=dot"


def test_opt_out_unknown_jaxlib_and_started_backends_change_nothing(monkeypatch):
    monkeypatch.setattr(xla_defaults, "_backends_started", lambda: False)
    env = {"JAXDIFF_XLA_DEFAULTS": "0"}
    assert xla_defaults.apply(env) == [] and "XLA_FLAGS" not in env
    monkeypatch.setattr(xla_defaults, "_jaxlib_version", lambda: "0.99.0")
    env = {}
    assert xla_defaults.apply(env) == [] and "XLA_FLAGS" not in env
    monkeypatch.setattr(xla_defaults, "_jaxlib_version", lambda: "0.10.2")
    monkeypatch.setattr(xla_defaults, "_backends_started", lambda: True)
    assert xla_defaults.apply(env) == [] and "XLA_FLAGS" not in env


def _clean_env():
    return {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAXDIFF_XLA_DEFAULTS")}


def test_import_jaxdiff_leaves_xla_flags_unchanged():
    code = ("import os, jaxdiff, jaxdiff.cli, jaxdiff.training, jaxdiff.sampling; "
            "print(repr(os.environ.get('XLA_FLAGS')))")
    env = dict(_clean_env(), XLA_FLAGS="--xla_force_host_platform_device_count=2")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=False, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-1] == repr("--xla_force_host_platform_device_count=2")
    out = subprocess.run([sys.executable, "-c", code], env=_clean_env(), capture_output=True,
                         text=True, check=False, timeout=120)
    assert out.stdout.split()[-1] == "None"


def test_the_cli_sets_the_flag_before_jax_starts_and_xla_accepts_it(tmp_path):
    """`jaxdiff noise` runs a JAX computation (a convolution-free one is enough for the flag to be
    read); the flag must be in XLA_FLAGS by then, and XLA must accept it."""
    code = ("import os, sys, jax, jax.numpy as jnp; from jaxdiff import cli; "
            f"rc = cli.main(['noise', '--out', {str(tmp_path / 'n.png')!r}, '--image_size', '8']);"
            " x = jnp.ones((2, 4, 4, 3)); w = jnp.ones((3, 3, 3, 5)); "
            "y = jax.lax.conv_general_dilated(x, w, (1, 1), 'SAME', "
            "dimension_numbers=('NHWC', 'HWIO', 'NHWC')); "
            "print(rc, os.environ['XLA_FLAGS'], float(y[0, 1, 1, 0]))")
    out = subprocess.run([sys.executable, "-c", code], env=_clean_env(), capture_output=True,
                         text=True, check=False, timeout=300)
    assert out.returncode == 0, out.stderr
    rc, flags, value = out.stdout.split()[-3:]
    assert (rc, flags) == ("0", FLAG)
    assert float(value) == 27.0  # interior pixel: 3 x 3 x 3 ones
