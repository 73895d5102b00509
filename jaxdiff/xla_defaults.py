"""XLA:CPU settings measured to be faster here; applied by the `jaxdiff` command and the
benchmarks, and by API users who call `apply()` (opt out: JAXDIFF_XLA_DEFAULTS=0).

Measured on the 2-core CPU with the default digits UNet (train step, batch 64; benchmarks/RESULTS.md):
XLA 0.10 hands convolutions, dots and reductions to its YNNPACK library by default, and its
convolutions are slower here than XLA's own (Eigen) ones: keeping YNNPACK for reductions only takes
the training step from ~510-560 ms to ~380-400 ms and the forward pass from ~160 ms to ~60 ms.

The flags go into the XLA_FLAGS environment variable, which XLA reads once, when the first JAX
computation initialises the backends, so `apply()` must run before that. `import jaxdiff` does
not call it: a library must not change process-wide settings on import. A flag the user already
set in XLA_FLAGS is left as it is, and nothing is changed when the backends are already running
(the flags could no longer take effect) or when the installed jaxlib is not one whose flags were
measured (an unknown flag would abort XLA).

Example:
  >>> from jaxdiff import xla_defaults
  >>> added = xla_defaults.apply()   # before the first JAX computation  # doctest: +SKIP
"""

from __future__ import annotations

import os
import sys

CPU_FLAGS = ("--xla_cpu_experimental_ynn_fusion_type=reduce",)
# jaxlib versions that know these flags (the pinned one and its patch releases).
KNOWN_JAXLIB_PREFIXES = ("0.10.",)
OPT_OUT_VARIABLE = "JAXDIFF_XLA_DEFAULTS"


def _jaxlib_version() -> str | None:
    """jaxlib's version, read from its version.py without importing it (import stays cheap)."""
    import importlib.util
    import re

    spec = importlib.util.find_spec("jaxlib")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(next(iter(spec.submodule_search_locations)), "version.py")
    try:
        with open(path, encoding="utf-8") as f:
            match = re.search(r'^_version\s*=\s*"([^"]+)"', f.read(), re.MULTILINE)
    except OSError:
        return None
    return match.group(1) if match else None


def _backends_started() -> bool:
    bridge = sys.modules.get("jax._src.xla_bridge")
    return bool(getattr(bridge, "_backends", None))


def apply(environ=None) -> list[str]:
    """Appends the CPU_FLAGS not already named in XLA_FLAGS; returns the flags it added."""
    environ = os.environ if environ is None else environ
    if environ.get(OPT_OUT_VARIABLE, "1") == "0" or _backends_started():
        return []
    version = _jaxlib_version()
    if version is None or not version.startswith(KNOWN_JAXLIB_PREFIXES):
        return []
    current = environ.get("XLA_FLAGS", "")
    named = {f.split("=", 1)[0] for f in current.split()}
    added = [f for f in CPU_FLAGS if f.split("=", 1)[0] not in named]
    if added:
        environ["XLA_FLAGS"] = " ".join([current, *added]).strip()
    return added
