"""Speed, memory and quality benchmarks (`python -m benchmarks.run`).

They measure jaxdiff as the `jaxdiff` command runs it, so the measured XLA:CPU defaults are
applied here, before any benchmark module starts JAX.
"""

from jaxdiff import xla_defaults

xla_defaults.apply()
