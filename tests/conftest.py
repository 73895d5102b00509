import os

# Tests run on the CPU with float32 unless a test asks otherwise.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

# Silent broadcasting between arrays of different ranks is a bug source; make it loud.
jax.config.update("jax_numpy_rank_promotion", "raise")
