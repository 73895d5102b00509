"""jaxdiff: denoising diffusion models in JAX/Flax.

Heavy submodules (models, training, data) are imported lazily so that `import jaxdiff` stays cheap.
"""

import importlib

from jaxdiff import xla_defaults as _xla_defaults

_xla_defaults.apply()

__version__ = "0.1.0"

_SUBMODULES = (
    "schedules",
    "diffusion",
    "losses",
    "sampling",
    "training",
    "checkpoint",
    "models",
    "data",
    "configs",
    "viz",
    "evaluation",
)


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"jaxdiff.{name}")
    raise AttributeError(f"module 'jaxdiff' has no attribute {name!r}")
