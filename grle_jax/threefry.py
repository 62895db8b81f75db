"""Threefry on the CPU without a loop: the same bits, fused (docs/benchmarks.md, "Threefry without a loop").

JAX lowers its ``threefry2x32`` hash (every ``jax.random`` draw: ``fold_in``, ``split``, ``bits``,
``uniform``) in two ways: on GPUs the 20 rounds unrolled, on the CPU as a ``fori_loop`` of five
steps of four rounds (a smaller program). XLA:CPU runs that loop one step at a time over the whole
batch, writing every intermediate array to memory, so at B = 8,192 environments (128 words each)
the draws leave the caches and threefry was about 60 % of a simulated slot. Unrolled, the rounds
are one elementwise fusion that stays in registers: the same integer operations in the same
order, so every bit is the same (``tests/test_threefry.py`` checks the draws against a plain
numpy Threefry-2x32), and the programs compile faster as well (no loop to compile).

Importing ``grle_jax`` registers JAX's own unrolled lowering rule for the CPU. It is a private JAX
interface: where it is missing (another JAX version) nothing changes but speed. Set the
environment variable ``GRLE_JAX_THREEFRY=rolled`` before the import to keep JAX's loop (for A/B
measurements); the results are the same either way.
"""

from __future__ import annotations

import os

from jax import lax

ENV_VAR = "GRLE_JAX_THREEFRY"


def _unroll_on_cpu() -> bool:
    if os.environ.get(ENV_VAR, "").strip().lower() == "rolled":
        return False
    try:
        from jax._src.interpreters import mlir
        from jax._src.random import threefry2x32 as tf

        prim, rounds = tf.threefry2x32_p, tf._threefry2x32_lowering
    except (ImportError, AttributeError):  # another JAX layout: keep its lowering (slower, same bits)
        return False

    def unrolled(k1, k2, x1, x2):
        return list(rounds(k1, k2, x1, x2, use_rolled_loops=False))

    # inline=False as JAX registers it for the other platforms: one out-of-line function per shape
    mlir.register_lowering(prim, mlir.lower_fun(unrolled, multiple_results=True), platform="cpu", inline=False)
    return True


def materialised(x):
    """``x`` (a 32- or 64-bit type), unchanged, as the output of a reduction (its bits xor zero), on
    the CPU; elsewhere ``x`` itself. XLA does not fuse a reduction into its consumers, so what made
    ``x`` is computed once, and a transpose stays a transposed array instead of being folded into
    the dot that reads it. XLA removes ``optimization_barrier`` on the CPU, and simplifies a max of
    two copies, so neither serves."""
    import jax
    import jax.numpy as jnp

    if jax.default_backend() != "cpu":
        return x
    ut = jnp.dtype(f"uint{8 * x.dtype.itemsize}")  # uint32, or uint64 for float64 under jax_enable_x64
    bits = x if x.dtype == ut else lax.bitcast_convert_type(x, ut)
    bits = lax.reduce(jnp.stack([bits, jnp.zeros_like(bits)]), jnp.array(0, ut), lax.bitwise_xor, (0,))
    return bits if x.dtype == ut else lax.bitcast_convert_type(bits, x.dtype)


def computed_once(x):
    """``x`` ``materialised``: the unrolled hash that made ``x`` runs once instead of once in
    every fusion that reads a part of it (a slot's r_hat has four readers in training). Identity
    when the hash is JAX's loop (a loop is not fused into its consumers either), and off the CPU
    (not measured there)."""
    return materialised(x) if UNROLLED else x


UNROLLED = _unroll_on_cpu()
