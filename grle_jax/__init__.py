"""grle_jax: a JAX simulator and online trainer for CNN-inference offloading with early exits."""

from . import threefry as _threefry  # noqa: F401  (jax.random's hash unrolled on the CPU: same bits, faster)
