"""jaxdiff: denoising diffusion models in JAX/Flax.

Heavy submodules (models, training, data) are imported lazily so that `import jaxdiff` stays cheap.
Importing changes no global state: the measured XLA:CPU defaults are applied by the `jaxdiff`
command, or explicitly with `jaxdiff.xla_defaults.apply()` before the first JAX computation.
"""

import importlib

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
    "xla_defaults",
)


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"jaxdiff.{name}")
    raise AttributeError(f"module 'jaxdiff' has no attribute {name!r}")
